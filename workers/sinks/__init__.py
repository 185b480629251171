"""Where vectors go: the sink contract (`base`), Redis vector sets (`redis_vset`, with its
connections, retry policy and wire format in `redis_client` and the shard key layout in
`vector_sets`) and the Parquet side (`parquet`, with the file layout, schema and table
conversion in `parquet_files`). Sinks know nothing of Kafka — offsets reach them as plain
data — and may import redis, pyarrow and the ground floor (`workers.errors`, `settings`),
never the encoder, the Kafka package or `pipelines`."""

from workers.sinks.base import Sink, SinkRecord

__all__ = ["Sink", "SinkRecord"]
