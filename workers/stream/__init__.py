"""The streaming replica: the polling thread (`worker`), the encode and sink threads
(`encode_stage`, `sink_stage`), the offsets ledger that ties them (`ledger`) and the replica's
metrics. May import the ground floor, `encoding`, `kafka` and `sinks`."""
