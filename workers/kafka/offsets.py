"""Kafka offsets read with the admin client: a topic's first and end offsets, a group's
committed offsets, the lag between them. The one place the project (status, the autoscaler,
replays, the tests) reads them; each call takes an admin client the caller keeps open, so a
caller that asks often (a measuring thread, a test waiting for commits) reuses one connection.
"""

from __future__ import annotations

import time

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec
from kafka.errors import RetriableError

from workers.settings import KafkaSettings

COORDINATOR_TRIES = 10  # a new group's coordinator may still be loading: asked again for ~5 s


def topic_offsets(admin: KafkaAdminClient, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(earliest, latest) offset per partition of `topic` ({} when the topic does not exist).
    Raises KafkaError when the brokers cannot answer."""
    meta = admin.describe_topics([topic])
    parts = [p["partition_index"] for t in meta if t.get("error_code", 0) == 0 for p in t.get("partitions", [])]
    if not parts:
        return {}, {}
    tps = [TopicPartition(topic, p) for p in parts]
    latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in tps})
    earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in tps})
    return ({tp.partition: earliest[tp].offset for tp in tps}, {tp.partition: latest[tp].offset for tp in tps})


def committed_offsets(admin: KafkaAdminClient, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` ({} for a group that does not
    exist). An error is not "nothing committed": it propagates (KafkaError), so an unreachable
    coordinator never reads as growing lag; a coordinator still being found or loaded (a new
    group) is asked again for a few seconds."""
    for attempt in range(COORDINATOR_TRIES):
        try:
            found = admin.list_group_offsets(group).get(group, {})
            break
        except RetriableError:
            if attempt == COORDINATOR_TRIES - 1:
                raise
            time.sleep(0.5)
    return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic}


def group_offsets(admin: KafkaAdminClient, settings: KafkaSettings) -> tuple[dict[int, int], dict[int, int]]:
    """(end offsets, committed offsets) per partition of the configured topic and group."""
    _, ends = topic_offsets(admin, settings.topic)
    return ends, committed_offsets(admin, settings.group_id, settings.topic)


def committed_sum(committed: dict[int, int]) -> int:
    """Records committed over all partitions (partitions with nothing committed count 0)."""
    return sum(c for c in committed.values() if c is not None and c >= 0)


def total_lag(ends: dict[int, int], committed: dict[int, int]) -> int:
    """Records produced and not yet committed, over all partitions."""
    return sum(e - max(0, committed.get(p) or 0) for p, e in ends.items())


def all_committed(ends: dict[int, int], committed: dict[int, int]) -> bool:
    """True when every partition (there is at least one) is committed up to its end offset."""
    return bool(ends) and all(committed.get(p, -1) >= end for p, end in ends.items())
