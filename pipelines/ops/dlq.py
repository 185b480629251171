"""The dead-letter topic read and re-driven with the project's own tools (`embedworker dlq show |
redrive`).

`show` reads the DLQ topic (`kafka.dead_letter_topic`) from its first offset to its end, without a
consumer group, and counts the records per reason and per source partition.

`redrive` produces each chosen record's original key, value and headers again, to its source topic
(the `embedworker.source.topic` header) or `--to`, with the header `embedworker.redriven_from`
(`<dlq topic>:<partition>:<offset>`; a copy rejected again keeps it, so `show` tells copies
from originals), then remembers how far it got: per DLQ partition and per
reason, the next offset, kept as the commit metadata of the group `<kafka.group_id>.dlq-redrive`.
A second run re-drives nothing twice; a run for one reason leaves the others' records for a
later run; `--since` passes over older records of the reasons it handles for good. Records
whose value the DLQ holds cut (`embedworker.value_truncated`) are not re-driven: their original
bytes are gone; they are counted. The produce is flushed before the progress is committed, so a
crash in between re-drives those records again at the next run (at least once; Redis upserts
and the lake's per-offset rows make a copy harmless).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from pipelines.config import EmbedworkerSettings
from workers.errors import SourceError
from workers.kafka.clients import kafka_error_message, new_consumer, new_producer

PREVIEW = 200  # bytes of a value `show` prints
STALL_S = 30.0  # reading the DLQ gives up after this long without a record


@dataclass
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self.header("embedworker.error.code") or "unknown"

    @property
    def source(self) -> str:
        return f"{self.header('embedworker.source.topic')}:{self.header('embedworker.source.partition')}"

    def summary(self) -> dict:
        value = self.value or b""
        return {"dlq_partition": self.partition, "dlq_offset": self.offset, "reason": self.reason,
                "message": self.header("embedworker.error.message"), "source": self.source,
                "source_offset": self.header("embedworker.source.offset"),
                "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
                "bytes": len(value), "truncated": self.header("embedworker.value_truncated") is not None,
                "redriven_from": self.header("embedworker.redriven_from"),
                "value": value[:PREVIEW].decode("utf-8", "replace")}


def _fail(exc: KafkaError, settings: EmbedworkerSettings):
    raise SourceError(kafka_error_message(exc, settings.kafka)) from None


def read_dead_letters(settings: EmbedworkerSettings, group: str | None = None) -> Iterator[DeadLetter]:
    """Every record of the DLQ topic, partition by partition, up to the ends read at the start.
    SourceError when Kafka cannot be reached or the topic does not exist."""
    topic = settings.kafka.dead_letter_topic
    try:
        consumer = new_consumer(settings.kafka, "dlq-tools", group_id=group, auto_offset_reset="earliest",
                                consumer_timeout_ms=10_000)
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            consumer.close()
            raise SourceError(f"the dead-letter topic {topic!r} does not exist (nothing was rejected yet)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
    except KafkaError as exc:
        _fail(exc, settings)
    try:
        remaining = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        last_progress = time.monotonic()
        while remaining:
            batches = consumer.poll(timeout_ms=2000, max_records=500)
            if not batches:
                remaining = {tp for tp in remaining if consumer.position(tp) < ends[tp]}
                if remaining and time.monotonic() - last_progress > STALL_S:
                    raise SourceError(f"Kafka: reading the dead-letter topic {topic!r} made no progress for "
                                      f"{STALL_S:g} s (a broker unreachable?); check kafka.bootstrap_servers")
                continue
            last_progress = time.monotonic()
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends[tp]:
                        yield DeadLetter(tp.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or []))
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    except KafkaError as exc:
        _fail(exc, settings)
    finally:
        consumer.close(autocommit=False)


def show(settings: EmbedworkerSettings, reason: str | None = None, limit: int = 20) -> dict:
    """Counts per reason and per source partition (all records), then up to `limit` records of
    `reason` (or of any)."""
    by_reason: Counter = Counter()
    by_source: Counter = Counter()
    records = []
    for dl in read_dead_letters(settings):
        by_reason[dl.reason] += 1
        by_source[dl.source] += 1
        if (reason is None or dl.reason == reason) and len(records) < limit:
            records.append(dl.summary())
    return {"topic": settings.kafka.dead_letter_topic, "total": sum(by_reason.values()),
            "by_reason": dict(by_reason.most_common()), "by_source_partition": dict(sorted(by_source.items())),
            "records": records}


def redrive(settings: EmbedworkerSettings, reason: str | None = None, since: datetime | None = None,
            to: str | None = None, dry_run: bool = False) -> dict:
    """Re-produce the chosen dead letters (see the module's docstring); returns the counts."""
    topic = settings.kafka.dead_letter_topic
    group = f"{settings.kafka.group_id}.dlq-redrive"
    since_ms = int(since.timestamp() * 1000) if since is not None else None
    progress = _read_progress(settings, group, topic)
    counts: Counter = Counter()
    handled: dict[int, set[str]] = {}
    last: dict[int, int] = {}
    producer = None if dry_run else _producer(settings)
    try:
        for dl in read_dead_letters(settings):
            last[dl.partition] = dl.offset + 1
            code = dl.reason
            if reason is not None and code != reason:
                continue
            handled.setdefault(dl.partition, set()).add(code)
            if dl.offset < progress.get(dl.partition, {}).get(code, 0):
                counts["already_redriven"] += 1
            elif since_ms is not None and dl.timestamp_ms < since_ms:
                counts["before_since"] += 1
            elif dl.header("embedworker.value_truncated") is not None:
                counts["truncated_not_redriven"] += 1
            else:
                counts["redriven"] += 1
                if dl.header("embedworker.redriven_from") is not None:
                    counts["copies"] += 1  # re-driven before, and rejected again
                if producer is not None:
                    target = to or dl.header("embedworker.source.topic") or settings.kafka.topic
                    headers = [(k, v) for k, v in dl.headers if not k.startswith("embedworker.")]
                    headers.append(("embedworker.redriven_from", f"{topic}:{dl.partition}:{dl.offset}".encode()))
                    producer.send(target, key=dl.key, value=dl.value, headers=headers)
        if producer is not None:
            producer.flush()
            _write_progress(settings, group, topic, progress, handled, last)
    except KafkaError as exc:
        _fail(exc, settings)
    finally:
        if producer is not None:
            producer.close()
    return {"topic": topic, "to": to or "the source topics", "reason": reason, "dry_run": dry_run,
            **{k: counts.get(k, 0) for k in ("redriven", "copies", "already_redriven", "before_since",
                                                  "truncated_not_redriven")}}


def _producer(settings: EmbedworkerSettings):
    try:
        return new_producer(settings.kafka, "dlq-redrive")
    except KafkaError as exc:
        _fail(exc, settings)


def _read_progress(settings: EmbedworkerSettings, group: str, topic: str) -> dict[int, dict[str, int]]:
    """Per DLQ partition, reason -> the next offset a re-drive takes (from the commit metadata)."""
    consumer = new_consumer(settings.kafka, "dlq-redrive", group_id=group)
    try:
        out = {}
        for p in consumer.partitions_for_topic(topic) or ():
            meta = consumer.committed(TopicPartition(topic, p), metadata=True)
            if meta is not None and meta.metadata:
                out[p] = {k: int(v) for k, v in json.loads(meta.metadata).items()}
        return out
    finally:
        consumer.close(autocommit=False)


def _write_progress(settings: EmbedworkerSettings, group: str, topic: str, progress: dict[int, dict[str, int]],
                    handled: dict[int, set[str]], last: dict[int, int]) -> None:
    """After the produce is flushed: each reason handled in a partition is done up to the last
    record read there."""
    offsets = {}
    for p, codes in handled.items():
        done = dict(progress.get(p, {}))
        done.update(dict.fromkeys(codes, last[p]))
        offsets[TopicPartition(topic, p)] = OffsetAndMetadata(last[p], json.dumps(done, sort_keys=True), -1)
    if offsets:
        consumer = new_consumer(settings.kafka, "dlq-redrive", group_id=group)
        try:
            consumer.commit(offsets)
        finally:
            consumer.close(autocommit=False)
