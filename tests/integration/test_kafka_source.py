"""KafkaSource against the real broker: group membership and commits."""

import time

import pytest
from kafka.structs import MemberState

from tests.helpers import committed_offsets, create_topic, doc, make_settings, produce, wait_until
from workers.kafka.source import KafkaSource

pytestmark = pytest.mark.integration


def test_a_member_left_rebalancing_after_a_finished_join_rejoins_and_commits(
        kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique):
    """kafka-python 3.0.12 can leave a member REBALANCING for good when a poll times out during
    a metadata-triggered rejoin (seen under CPU load): commits are then refused forever. The
    source must notice the finished join nobody collected and rejoin."""
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    create_topic(settings, partitions=2)
    produce(settings, [doc(f"d{i}", f"text {i}") for i in range(10)])
    assigned = []
    source = KafkaSource(settings.kafka)
    source.setup(lambda parts: assigned.extend(parts), lambda parts, clean: None)
    try:
        records = []
        deadline = time.monotonic() + 30
        while len(records) < 10 and time.monotonic() < deadline:
            records += source.poll(timeout_ms=100)
        assert len(records) == 10
        coordinator = source._consumer._coordinator
        wait_until(lambda: source.poll(timeout_ms=50) == [] and coordinator.state is MemberState.STABLE,
                   timeout=30, message="a stable group")
        # The state the race leaves behind: REBALANCING, no join in flight, nothing asking to rejoin.
        with coordinator._lock:
            coordinator.state = MemberState.REBALANCING
        assert coordinator._join_task is None and not coordinator.need_rejoin()
        assert not source.commit({(settings.kafka.topic, 0): 1})

        ends = {}
        for rec in records:
            ends[(rec.topic, rec.partition)] = max(ends.get((rec.topic, rec.partition), 0), rec.offset + 1)
        wait_until(lambda: source.poll(timeout_ms=50) == [] and source.commit(ends), timeout=30,
                   message="commits accepted again")
        assert coordinator.state is MemberState.STABLE
        assert committed_offsets(settings) == {p: off for (_, p), off in ends.items()}
    finally:
        source.close()
