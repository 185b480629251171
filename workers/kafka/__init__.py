"""Everything that speaks to Kafka from inside a replica: the one client builder (`clients`:
brokers, timeouts, security, `acks=all` producers), the consuming side with cooperative
rebalancing and ownership checks (`source`) and the dead-letter publisher (`dead_letters`).
It may import kafka-python and the ground floor (`workers.documents`, `errors`, `settings`),
never Redis, Parquet, the encoder or `pipelines`: offsets leave it as plain data."""
