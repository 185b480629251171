"""`embedworker restore`: rebuild an index's vector sets from the lake, without the model.

For a Redis that lost its data, or a new Redis (Cluster): the stored vectors and attributes of
one index are added as the sink adds them (shards, key layout, quantization, EF and M from the
config), each document as its newest record in the lake says (an upsert adds its chunks, a
delete removes it), in batches with the sink's retry policy (`retry_backpressure`). Running it twice writes the same
elements again (VADD replaces), so it is idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import EmbedworkerSettings
from pipelines.maintenance.lake_admin import LakeError, lake_dataset
from pipelines.maintenance.lake_scan import scan_newest
from workers.settings import RedisSettings, model_slug
from workers.sinks.base import SinkRecord, retry_backpressure
from workers.sinks.redis_vset import RedisVectorSetSink

COLUMNS = ["id", "chunk", "op", "model", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at",
           "embedding", "title", "url", "source", "lang", "published_at", "attrs"]


def restore_index(settings: EmbedworkerSettings, index: str | None = None, target: str | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Add the vectors of `index` (default: the configured one) from the lake to the vector sets
    of `target` (default: the same name), a batch at a time (pipelines/maintenance/lake_scan.py:
    the driver holds the index's keys and one batch, never all its vectors). Returns counts and
    the rate."""
    source = index or settings.redis.index_name(settings.model.name)
    dataset = lake_dataset(settings)
    scan = scan_newest(dataset, source) if dataset is not None else None
    if scan is None or scan.rows_in_lake == 0:
        raise LakeError(f"the lake at {settings.parquet.path} holds no rows of index {source!r}")
    keys = scan.keys
    models = set(pc.unique(keys.filter(pc.equal(keys["op"], "upsert"))["model"]).to_pylist())
    if len(models) > 1:
        raise LakeError(f"index {source!r} holds vectors of several models ({', '.join(sorted(models))}): not restored")
    model = models.pop() if models else settings.model.name
    prefix = settings.model.document_prefix if model == settings.model.name else None
    redis: RedisSettings = settings.redis.model_copy(update={"index": target or source})
    chunks = dict(zip(*np.unique(np.asarray(keys["id"].to_pylist(), dtype=object), return_counts=True)))
    chunked = settings.model.chunking.enabled
    dim = next((d for rows in scan.batches(["embedding"]) if (d := _dim(rows))), 0)  # the first vector's
    sink = RedisVectorSetSink(redis, model_slug(model), model, dim, prefix)
    sink.setup()
    started, written, deleted, done = time.monotonic(), 0, 0, 0
    try:
        for rows in scan.batches(COLUMNS):
            batch = [_record(r, chunks, chunked) for r in rows.to_pylist()]
            retry_backpressure(lambda batch=batch: sink.write(batch))
            written += sum(1 for r in batch if r.op == "upsert")
            deleted += sum(1 for r in batch if r.op == "delete")
            done += len(batch)
            if on_progress:
                on_progress(done, keys.num_rows)
    finally:
        sink.close()
    seconds = time.monotonic() - started
    return {"index": source, "target": sink.index.base, "model": model,
            "rows_in_lake": scan.rows_in_lake, "vectors": written, "deleted": deleted, "seconds": round(seconds, 2),
            "vectors_per_s": round(written / seconds, 1) if seconds > 0 else None}


def _dim(rows: pa.Table) -> int:
    for value in rows["embedding"]:
        if value.is_valid:
            return len(value)
    return 0


def _record(r: dict, chunks: dict, chunked: bool) -> SinkRecord:
    vector = None if r["embedding"] is None else np.asarray(r["embedding"], dtype=np.float32)
    published, ingested = r["published_at"], r["ingested_at"]
    return SinkRecord(id=r["id"], op=r["op"], topic=r["kafka_topic"], partition=r["kafka_partition"],
                      offset=r["kafka_offset"], vector=vector, chunk=r["chunk"] or 0, chunks=int(chunks[r["id"]]),
                      chunked=chunked, title=r["title"], url=r["url"], source=r["source"], lang=r["lang"],
                      published_at=published.astimezone(UTC) if isinstance(published, datetime) else None,
                      attrs=orjson.loads(r["attrs"]) if r["attrs"] else {},
                      ingested_at=ingested.astimezone(UTC) if isinstance(ingested, datetime) else None)


