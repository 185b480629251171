"""What runs inside a Ray actor. At the top: the stream (`worker`, `encode_stage`,
`sink_stage`, `offsets`, `metrics`, `backfill_units`) and the ground floor every package below
may use (`documents`, `settings`, `errors`, `logs`, `testing`). Packages: `encoding/` (the
model and its batching), `kafka/` (source, client builder, dead letters), `sinks/` (Redis
vector sets, Parquet). Nothing here imports `pipelines`."""
