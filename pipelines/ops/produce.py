"""Feed a JSONL file into the topic, one record per line, keyed by the document id.

Lines are sent as they are (bytes), so malformed lines reach the worker and its dead-letter
topic exactly like bad records from any other producer.
"""

from __future__ import annotations

import json
from pathlib import Path

from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipelines.config import EmbedworkerSettings
from workers.errors import SourceError
from workers.kafka.clients import kafka_error_message, new_admin, new_producer


def ensure_topic(settings: EmbedworkerSettings, topic: str, partitions: int) -> bool:
    """Create `topic` with `partitions` partitions if it does not exist; True if created."""
    k = settings.kafka
    try:
        admin = new_admin(k, "produce")
    except KafkaError as exc:
        raise SourceError(kafka_error_message(exc, k)) from None
    try:
        if topic in admin.list_topics():
            return False
        spec: dict = {"num_partitions": partitions, "replication_factor": k.replication_factor}
        if k.min_insync_replicas is not None:
            spec["configs"] = {"min.insync.replicas": str(k.min_insync_replicas)}
        admin.create_topics({topic: spec}, wait_for_metadata=True)
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


def record_key(line: bytes) -> bytes | None:
    """The id of a JSON object line, as the record key (None for lines that are not one)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"]:
        return obj["id"].encode("utf-8")
    return None


def produce_file(settings: EmbedworkerSettings, path: str | Path, partitions: int = 3, on_progress=None) -> dict:
    """Send every non-empty line of `path`; returns {"sent": n, "topic": ..., "created": bool}."""
    k = settings.kafka
    created = ensure_topic(settings, k.topic, partitions)
    ensure_topic(settings, k.dead_letter_topic, partitions)
    try:
        producer = new_producer(k, "produce", linger_ms=20)
    except KafkaError as exc:
        raise SourceError(kafka_error_message(exc, k)) from None
    sent = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                line = line.rstrip(b"\r\n")
                if not line.strip():
                    continue
                producer.send(k.topic, key=record_key(line), value=line)
                sent += 1
                if on_progress and sent % 1000 == 0:
                    on_progress(sent)
        producer.flush()
    finally:
        producer.close()
    return {"sent": sent, "topic": k.topic, "created": created}
