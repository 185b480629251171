"""Kafka in: one consumer per worker in a shared group, manual commits, pause under backpressure.

Knows nothing of Redis or Parquet. kafka-python's consumer is not thread-safe: every method
here is called from the worker's polling thread only (the rebalance listener runs inside poll).
"""

from __future__ import annotations

import logging
from typing import Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import CommitFailedError, IllegalStateError, KafkaError, KafkaTimeoutError, RebalanceInProgressError
from kafka.structs import MemberState, OffsetAndMetadata

from workers.errors import SourceError
from workers.settings import KafkaSettings

TP = tuple[str, int]
log = logging.getLogger("embedworker.kafka")


def kafka_error_message(exc: Exception, settings: KafkaSettings) -> str:
    """A message that names the problem (never the password)."""
    name = type(exc).__name__
    sec = settings.security
    hint = ""
    if "Authentication" in name or "SASL" in str(exc).upper():
        hint = (f" (SASL {sec.sasl_mechanism} as user {sec.sasl_username!r} was rejected: check "
                "kafka.security.sasl_username and sasl_password / sasl_password_file)")
    elif "Authorization" in name:
        hint = " (the principal lacks an ACL for this topic or group)"
    elif isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower():
        hint = f" (no broker answered at {settings.bootstrap_servers} with protocol {sec.protocol}"
        if sec.protocol.startswith("SASL"):
            hint += (f"; brokers close the connection when SASL {sec.sasl_mechanism} authentication fails: check "
                     f"that user {sec.sasl_username!r} and its password (kafka.security.sasl_password or "
                     "sasl_password_file) are right")
        hint += "; check kafka.bootstrap_servers and kafka.security)"
    return f"Kafka: {name}: {exc}{hint}"


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: must return promptly and make no blocking Kafka call.
    Incremental (cooperative) rebalancing: only partitions that really move are revoked."""

    def __init__(self, on_assigned: Callable[[list[TP]], None], on_revoked: Callable[[list[TP], bool], None]):
        self._on_assigned, self._on_revoked = on_assigned, on_revoked

    def _call(self, what: str, fn, partitions, *args) -> None:
        try:
            fn(sorted((tp.topic, tp.partition) for tp in partitions), *args)
        except Exception:
            log.exception("handling %s partitions failed", what)
            raise

    def on_partitions_revoked(self, revoked):
        self._call("revoked", self._on_revoked, revoked, True)

    def on_partitions_lost(self, lost):
        self._call("lost", self._on_revoked, lost, False)

    def on_partitions_assigned(self, assigned):
        self._call("assigned", self._on_assigned, assigned)


class KafkaSource:
    def __init__(self, settings: KafkaSettings, replica: int = 0):
        self.settings = settings
        self.client_id = f"{settings.client_id}-{replica}"  # `embedworker status` maps group members to replicas
        self._consumer: KafkaConsumer | None = None
        self._paused = False
        self._finished: set[TP] = set()

    def setup(self, on_assigned: Callable[[list[TP]], None], on_revoked: Callable[[list[TP], bool], None]) -> None:
        """Connect and join the group. `on_revoked(partitions, clean)` gets clean=False when the
        partitions were lost (the group evicted this member): nothing may be flushed then.
        Raises SourceError (with the reason) when the broker cannot be reached or rejects the
        credentials."""
        s = self.settings
        try:
            self._consumer = KafkaConsumer(
                bootstrap_servers=s.bootstrap_servers.split(","), group_id=s.group_id, client_id=self.client_id,
                enable_auto_commit=False, auto_offset_reset="latest" if s.start == "latest" else "earliest",
                partition_assignment_strategy=(CooperativeStickyAssignor,),
                max_poll_records=s.max_poll_records, max_poll_interval_ms=s.max_poll_interval_ms,
                session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
                request_timeout_ms=s.request_timeout_ms, bootstrap_timeout_ms=min(s.request_timeout_ms, 15000),
                metadata_max_age_ms=s.metadata_max_age_ms,
                max_partition_fetch_bytes=s.max_message_bytes,
                fetch_max_bytes=max(52_428_800, s.max_message_bytes), receive_message_max_bytes=max(
                    104_857_600, 2 * s.max_message_bytes),
                **s.security.client_options())
            # Learn the topic's partitions before joining: a group leader that joins without them
            # assigns nothing until its next metadata refresh.
            if not self._consumer.partitions_for_topic(s.topic):
                log.warning("topic %s has no partitions yet (it will be picked up when it does)", s.topic)
            self._consumer.subscribe([s.topic], listener=_Listener(on_assigned, on_revoked))
        except KafkaError as exc:
            raise SourceError(kafka_error_message(exc, s)) from None

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list:
        """Records in offset order per partition (rebalance callbacks run inside)."""
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except (KafkaError, IllegalStateError) as exc:
            if "Authentication" in type(exc).__name__ or "Authorization" in type(exc).__name__:
                raise SourceError(kafka_error_message(exc, self.settings)) from None
            log.warning("poll failed, will retry: %s", exc)
            return []
        self._unstick_finished_join()
        return [rec for tp in sorted(batches, key=lambda t: (t.topic, t.partition)) for rec in batches[tp]]

    def _unstick_finished_join(self) -> None:
        """Work around a kafka-python 3.0.12 race: when a poll times out while a rejoin that was
        caused by a metadata change is in flight, and that join's own assignment clears the
        change, the next poll sees no reason to rejoin and never collects the finished join;
        the member stays REBALANCING and every commit is refused. Asking for one more rejoin
        lets the next poll complete a fresh generation."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        if coordinator is None or getattr(coordinator, "state", None) is not MemberState.REBALANCING:
            return
        task = getattr(coordinator, "_join_task", None)
        if (task is None or task.is_done) and not coordinator.need_rejoin():
            log.info("group %s: a finished join was never completed; rejoining", self.settings.group_id)
            coordinator.request_rejoin()

    def commit(self, offsets: dict[TP, int]) -> bool:
        """Commit next-offsets per partition; False (and a warning) if the group is rebalancing."""
        if not offsets:
            return True
        payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        try:
            self._consumer.commit(offsets=payload)
            return True
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            log.warning("commit of %s skipped: %s", offsets, exc)
        except KafkaError as exc:
            log.warning("commit of %s failed, will retry: %s", offsets, exc)
        return False

    def commit_async(self, offsets: dict[TP, int]) -> None:
        """Commit without blocking (for the rebalance callbacks, which run on the IO thread)."""
        if offsets:
            payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            self._consumer.commit_async(offsets=payload)

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self._consumer.assignment())

    def pause(self) -> None:
        """Stop fetching from every assigned partition; poll() keeps the group membership alive."""
        assigned = self._consumer.assignment()
        if assigned:
            self._consumer.pause(*assigned)
        self._paused = True

    def resume(self) -> None:
        paused = [tp for tp in self._consumer.paused() if (tp.topic, tp.partition) not in self._finished]
        if paused:
            self._consumer.resume(*paused)
        self._paused = False

    def seek(self, tp: TP, offset: int) -> None:
        """Read this partition again from `offset` (non-blocking; from the polling thread)."""
        self._consumer.seek(TopicPartition(*tp), offset)

    def finish(self, tp: TP) -> None:
        """Stop fetching this partition for good (a bounded replay reached its end offset)."""
        if tp not in self._finished:
            self._finished.add(tp)
            self._consumer.pause(TopicPartition(*tp))

    @property
    def paused(self) -> bool:
        return self._paused

    def lag(self) -> dict[TP, int]:
        """End offset minus position per assigned partition (for metrics)."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self._consumer.end_offsets(assigned)
            return {(tp.topic, tp.partition): max(0, ends[tp] - self._consumer.position(tp)) for tp in assigned}
        except (KafkaError, IllegalStateError):
            return {}

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close: %s", exc)
            self._consumer = None
