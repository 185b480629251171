"""What the pipeline has done: Kafka lag per partition, vectors per vector set, Parquet files and rows.

Returns plain data; the CLI prints it (a table or --json). Each part is collected on its own,
so an unreachable service shows up as an error in its part instead of failing the whole report.
"""

from __future__ import annotations

import time

import pyarrow.parquet as pq
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import KafkaError
from redis.exceptions import RedisError

from pipelines.config import EmbedworkerSettings
from pipelines.search import alias_key, resolve_index
from workers.kafka_source import kafka_error_message
from workers.model_files import model_slug
from workers.settings import redact_url
from workers.sinks.parquet import list_files, open_filesystem
from workers.sinks.redis_vset import connect, explain_redis_error


def topic_offsets(admin: KafkaAdminClient, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(earliest, latest) offset per partition of `topic` ({} when the topic does not exist)."""
    meta = admin.describe_topics([topic])
    parts = [p["partition_index"] for t in meta if t.get("error_code", 0) == 0 for p in t.get("partitions", [])]
    if not parts:
        return {}, {}
    tps = [TopicPartition(topic, p) for p in parts]
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    return ({tp.partition: earliest[tp].offset for tp in tps}, {tp.partition: latest[tp].offset for tp in tps})


def kafka_status(settings: EmbedworkerSettings) -> dict:
    k = settings.kafka
    try:
        admin = KafkaAdminClient(bootstrap_servers=k.bootstrap_servers.split(","), request_timeout_ms=10000,
                                 **k.security.client_options())
    except KafkaError as exc:
        return {"error": kafka_error_message(exc, k)}
    try:
        _, ends = topic_offsets(admin, k.topic)
        committed = {}
        try:
            group = admin.list_group_offsets(k.group_id).get(k.group_id, {})
            committed = {tp.partition: meta.offset for tp, meta in group.items() if tp.topic == k.topic}
        except KafkaError:
            pass
        partitions = []
        for p in sorted(ends):
            c = committed.get(p)
            lag = ends[p] - (c if c is not None and c >= 0 else 0)
            partitions.append({"partition": p, "committed": c, "end": ends[p], "lag": lag})
        dlq_start, dlq_end = topic_offsets(admin, k.dead_letter_topic)
        return {"topic": k.topic, "group": k.group_id, "partitions": partitions,
                "total_lag": sum(p["lag"] for p in partitions), "dlq_topic": k.dead_letter_topic,
                "dlq_records": sum(dlq_end[p] - dlq_start.get(p, 0) for p in dlq_end)}
    except KafkaError as exc:
        return {"error": kafka_error_message(exc, k)}
    finally:
        admin.close()


def redis_status(settings: EmbedworkerSettings) -> dict:
    r = settings.redis
    if not r.enabled:
        return {"enabled": False}
    urls = r.shard_urls or [r.url]
    try:
        clients = {u: connect(r, u) for u in dict.fromkeys(urls)}
        first = clients[urls[0]]
        index = resolve_index(first, settings, model_slug(settings.model.name))
        alias = first.get(alias_key(settings))
        keys = []
        for i, key in enumerate(index.shard_keys()):
            client = clients[urls[i % len(urls)]]
            keys.append({"key": key, "vectors": int(client.execute_command("VCARD", key) or 0),
                         "server": redact_url(urls[i % len(urls)])})
        meta = {k.decode(): v.decode() for k, v in first.hgetall(index.meta_key).items()}
        return {"index": index.base, "alias": alias.decode() if alias else None, "meta": meta, "keys": keys,
                "total_vectors": sum(k["vectors"] for k in keys)}
    except RedisError as exc:
        return {"error": str(explain_redis_error(exc, urls[0], r) or f"Redis: {exc}")}


def parquet_status(settings: EmbedworkerSettings, topic: str | None = None) -> dict:
    p = settings.parquet
    if not p.enabled:
        return {"enabled": False}
    try:
        fs, root = open_filesystem(p.path)
        files = list_files(fs, root)
        rows = size = 0
        for path, _ in files:
            with fs.open_input_file(path) as f:
                rows += pq.ParquetFile(f).metadata.num_rows
                size += f.size()
        per_partition: dict[str, int] = {}
        for _, m in files:
            if topic is None or m["topic"] == topic:
                key = f"{m['topic']}:{int(m['partition'])}"
                per_partition[key] = max(per_partition.get(key, -1), int(m["last"]))
        return {"path": root, "files": len(files), "rows": rows, "bytes": size, "highest_offset": per_partition}
    except Exception as exc:  # noqa: BLE001 - a status report shows the error instead of failing
        return {"error": f"Parquet at {p.path}: {exc}"}


def collect_status(settings: EmbedworkerSettings) -> dict:
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kafka": kafka_status(settings),
            "redis": redis_status(settings), "parquet": parquet_status(settings, settings.kafka.topic)}
