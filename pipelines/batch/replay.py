"""Bounded replays of a Kafka topic: consume it from the beginning up to the end offsets read at
the start, with a consumer group of the run's own and the streaming worker, then stop.
`embedworker backfill --replay-topic` and `embedworker eval` run it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from kafka.errors import KafkaError

from pipelines.batch.backfill import BackfillError, index_size, switch_alias, with_target
from pipelines.config import EmbedworkerSettings
from pipelines.stream.supervisor import StreamSupervisor
from workers.kafka.clients import kafka_error_message, new_admin
from workers.kafka.offsets import committed_offsets, topic_offsets
from workers.sinks.redis_client import check_reachable

log = logging.getLogger("embedworker.replay")


def _admin(settings: EmbedworkerSettings):
    try:
        return new_admin(settings.kafka, "replay", request_timeout_ms=10000)
    except KafkaError as exc:
        raise BackfillError(f"cannot reach Kafka: {kafka_error_message(exc, settings.kafka)}") from None


def replay_topic(settings: EmbedworkerSettings, topic: str, group: str | None = None,
                 on_progress: Callable[[dict], None] | None = None, target: str | None = None,
                 timeout_s: float | None = None) -> dict:
    """Consume `topic` from the beginning to its end offsets as of now, with a consumer group of
    this run's own (unless `group` names one to resume), through the streaming worker and sinks;
    returns when everything up to there is committed. With `target`, the search alias moves to it
    only when the replicas wrote (or rejected) every record of the range and the index holds
    vectors. Raises BackfillError if that takes longer than `timeout_s` (no limit if None) or
    falls short (the alias then stays where it was)."""
    settings = with_target(settings, target)
    kafka = settings.kafka.model_copy(update={"topic": topic, "start": "earliest",
                                              "group_id": group or
                                              f"{settings.kafka.group_id}-replay-{topic}-{uuid.uuid4().hex[:8]}"})
    settings = settings.model_copy(update={"kafka": kafka})
    admin = _admin(settings)
    try:
        begins, ends = topic_offsets(admin, topic)
    except KafkaError as exc:
        admin.close()
        raise BackfillError(f"cannot read the offsets of {topic!r}: {kafka_error_message(exc, settings.kafka)}") from None
    if not ends:
        admin.close()
        raise BackfillError(f"topic {topic!r} does not exist or has no partitions")
    if settings.redis.enabled:
        check_reachable(settings.redis)
    expected = sum(end - begins.get(p, 0) for p, end in ends.items())
    stop = {f"{topic}:{p}": end for p, end in ends.items()}
    supervisor = StreamSupervisor(settings, stop_offsets=stop)
    started = time.monotonic()
    done = False

    def finished() -> bool:
        nonlocal done
        try:
            committed = committed_offsets(admin, kafka.group_id, topic)
        except KafkaError as exc:  # asked again at the next poll
            log.warning("replay: cannot read the committed offsets: %s", kafka_error_message(exc, settings.kafka))
            return timeout_s is not None and time.monotonic() - started > timeout_s
        if on_progress:
            on_progress({"committed": sum(min(committed.get(p, 0), e) for p, e in ends.items()),
                         "total": sum(ends.values())})
        done = all(committed.get(p, 0) >= end for p, end in ends.items())
        return done or (timeout_s is not None and time.monotonic() - started > timeout_s)

    try:
        supervisor.start()
        results = supervisor.supervise(until=finished, poll_s=1.0)
    finally:
        admin.close()
    if not done:
        raise BackfillError(f"replaying {topic!r} did not finish in {timeout_s:.0f} s")
    counts = {k: sum(int(r.get(k, 0) or 0) for r in results) for k in ("consumed", "written", "rejected", "deleted")}
    summary = {"topic": topic, "group": kafka.group_id, "end_offsets": ends, "records": expected, **counts,
               "seconds": round(time.monotonic() - started, 1), "replicas": results}
    if target:
        vectors = index_size(settings, target)
        upserts = counts["written"] - counts["deleted"]
        if counts["written"] + counts["rejected"] < expected or (upserts > 0 and vectors == 0):
            raise BackfillError(
                f"replay of {topic!r} into index {target!r} fell short: {expected} records in the range, the "
                f"replicas report {counts['written']} written and {counts['rejected']} rejected, and the index holds "
                f"{vectors} vectors; the search alias was not moved (a replica restarted mid-run also loses its "
                "counts: run the replay again)")
        switch_alias(settings, target)
        summary["vectors"] = vectors
    return summary
