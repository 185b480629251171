"""Helpers for integration tests: settings for a fresh topic/group/index, producing, waiting,
reading the DLQ and the Parquet output back."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from pipelines.config import EmbedworkerSettings, load_settings
from workers.kafka.offsets import all_committed as every_committed
from workers.kafka.offsets import committed_offsets as kafka_committed
from workers.kafka.offsets import topic_offsets


def make_settings(kafka_bootstrap: str, redis_url: str, model_dir, tmp_path: Path, unique: str, **overrides) -> EmbedworkerSettings:
    """Settings for one test: its own topic, group, key prefix and Parquet folder; fast commits."""
    base = {
        "kafka": {"bootstrap_servers": kafka_bootstrap, "topic": f"t-{unique}", "group_id": f"g-{unique}",
                  "commit_interval_ms": 200, "session_timeout_ms": 6000, "metadata_max_age_ms": 3000},
        "model": {"name": str(model_dir)},
        "batching": {"max_wait_ms": 5},
        "redis": {"url": redis_url, "key_prefix": f"test{unique}", "quantization": "noquant"},
        "parquet": {"path": str(tmp_path / "parquet"), "max_seconds": 0.5},
        "workers": {"num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30},
        "logging": {"summary_interval_s": 5},
    }
    for section, values in overrides.items():
        base[section] = {**base.get(section, {}), **values}
    return load_settings(None, base)


def create_topic(settings: EmbedworkerSettings, partitions: int = 3, topic: str | None = None) -> None:
    """As `embedworker produce` creates it (kafka.replication_factor, min_insync_replicas)."""
    from pipelines.ops.produce import ensure_topic

    ensure_topic(settings, topic or settings.kafka.topic, partitions)


def produce(settings: EmbedworkerSettings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    """Send (key, value) pairs in order (same key -> same partition, in order)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers.split(","), acks="all", linger_ms=5,
                             max_request_size=settings.kafka.max_message_bytes)
    for key, value in records:
        producer.send(settings.kafka.topic, key=key, value=value)
    producer.flush()
    producer.close()


def doc(doc_id: str, text: str, **fields) -> tuple[bytes, bytes]:
    return doc_id.encode(), json.dumps({"id": doc_id, "text": text, **fields}, ensure_ascii=False).encode()


_ADMINS: dict[str, KafkaAdminClient] = {}  # one admin client per broker list, reused by every poll


def _admin(settings: EmbedworkerSettings) -> KafkaAdminClient:
    servers = settings.kafka.bootstrap_servers
    if servers not in _ADMINS:
        _ADMINS[servers] = KafkaAdminClient(bootstrap_servers=servers.split(","))
    return _ADMINS[servers]


def forget_admin(servers: str) -> None:
    """Close the admin client of these brokers (one that restarted, or a private broker that
    stops): connect afresh next time, and leave no client reconnecting to a broker that is gone."""
    admin = _ADMINS.pop(servers, None)
    if admin is not None:
        try:
            admin.close()
        except Exception:  # noqa: BLE001 - closing a client of a broker that is gone
            pass


def end_offsets(settings: EmbedworkerSettings, topic: str | None = None) -> dict[int, int]:
    """The topic's end offsets (the project's helper: workers/kafka/offsets.py)."""
    return topic_offsets(_admin(settings), topic or settings.kafka.topic)[1]


def committed_offsets(settings: EmbedworkerSettings) -> dict[int, int]:
    """The group's committed offsets ({} while the broker cannot tell, e.g. just after a restart)."""
    try:
        return kafka_committed(_admin(settings), settings.kafka.group_id, settings.kafka.topic)
    except KafkaError:
        forget_admin(settings.kafka.bootstrap_servers)  # a broker restarted: connect afresh next time
        return {}


def wait_until(predicate, timeout: float, interval: float = 0.5, message: str = "condition", diagnose=None):
    """Poll `predicate` until it returns something true, and return that; on timeout fail with
    `message` and what `diagnose()` tells."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    details = f"\n{diagnose()}" if diagnose else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {message}{details}")


def all_committed(settings: EmbedworkerSettings) -> bool:
    try:
        ends = end_offsets(settings)
    except KafkaError:
        forget_admin(settings.kafka.bootstrap_servers)
        return False
    return every_committed(ends, committed_offsets(settings))


def read_dlq(settings: EmbedworkerSettings, expected: int, timeout: float = 20.0) -> list:
    consumer = KafkaConsumer(settings.kafka.dead_letter_topic, bootstrap_servers=settings.kafka.bootstrap_servers.split(","),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             max_partition_fetch_bytes=settings.kafka.max_message_bytes)
    records, deadline = [], time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        for batch in consumer.poll(timeout_ms=1000).values():  # anything beyond what was expected
            records.extend(batch)
    finally:
        consumer.close()
    return records


def header(record, name: str) -> str | None:
    for k, v in record.headers or []:
        if k == name:
            return v.decode()
    return None


def read_parquet(settings: EmbedworkerSettings, index: str | None = None):
    """Every row of the lake's current version (or of the plain files under parquet.path), with
    `index` and `dt`, or one index's; None when nothing was written."""
    from pipelines.maintenance.lake_admin import read_rows

    return read_rows(settings, index)


def parquet_metadata(settings: EmbedworkerSettings) -> dict[str, str]:
    """What the writer recorded about the vectors (model, dim, prefix, normalization): the newest
    commit's metadata in the lake, the file schema's metadata for plain files."""
    if settings.parquet.format == "delta":
        from deltalake import DeltaTable

        return {k: v for k, v in DeltaTable(settings.parquet.path).history(1)[0].items() if k.startswith("embedworker.")}
    meta = read_parquet(settings).schema.metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


class WorkerThread:
    """An EmbeddingWorker running in this process (the code an actor runs), for fast tests."""

    def __init__(self, settings: EmbedworkerSettings, replica: int = 0):
        from workers.stream.worker import EmbeddingWorker

        self.worker = EmbeddingWorker(**settings.worker_kwargs(), replica=replica)
        self.result = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.result = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self, timeout: float = 60) -> dict:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error:
            raise self.error
        return self.result


def service(script: str, action: str, run_dir: Path, **env) -> None:
    """Start or stop a private service (Kafka, Redis, s3proxy, Toxiproxy) with the project's own
    scripts in infra/local/, its state under `run_dir`."""
    full = {**os.environ, "EMBEDWORKER_RUN_DIR": str(run_dir), **{k: str(v) for k, v in env.items()}}
    subprocess.run(["bash", str(Path(__file__).resolve().parents[1] / "infra" / "local" / script), action], env=full,
                   check=True, capture_output=True, timeout=240)
