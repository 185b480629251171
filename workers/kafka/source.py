"""Kafka in: one consumer per worker in a shared group, manual commits, pause under backpressure.

Knows nothing of Redis or Parquet. kafka-python's consumer is not thread-safe: every method
here is called from the worker's polling thread, except `commit_async`, which the rebalance
listener calls. The listener runs on kafka-python's IO thread (`kafka-io-<client id>`) while
the polling thread waits inside `poll()` (see the thread model in workers/stream/worker.py).

Poll errors by type: authentication and authorization stop the worker (SourceError with the
reason); anything else (an unknown topic, a broker that went away) backs off, doubling from
0.1 s to 5 s, is counted (`embedworker_source_errors{error=<class>}`), shown in `status`, and
logged once per kind of error and then once a minute while it lasts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.admin import MemberToRemove
from kafka.coordinator.assignors.cooperative_sticky import CooperativeStickyAssignor
from kafka.errors import (
    CommitFailedError,
    FencedInstanceIdError,
    IllegalStateError,
    KafkaError,
    RebalanceInProgressError,
)
from kafka.structs import MemberState, OffsetAndMetadata

from workers.errors import EmbedworkerError, ReplicaError, SourceError
from workers.kafka.clients import FATAL_KAFKA_ERRORS, kafka_error_message, new_admin, new_consumer
from workers.settings import KafkaSettings

TP = tuple[str, int]
log = logging.getLogger("embedworker.kafka")


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread (heartbeats wait meanwhile): bounded work only and no
    blocking Kafka call.
    Incremental (cooperative) rebalancing: only partitions that really move are revoked.
    Partitions assigned while the source is paused are paused before any record is fetched.
    An exception in a handler leaves the replica's view of its partitions half applied:
    kafka-python would hand it back from poll() as a KafkaError, which reads as a passing
    outage; it is kept here instead, and the next poll raises it as the replica's failure."""

    def __init__(self, source: KafkaSource, on_assigned: Callable[[list[TP]], None],
                 on_revoked: Callable[[list[TP], bool], None]):
        self._source, self._on_assigned, self._on_revoked = source, on_assigned, on_revoked
        self.failed: Exception | None = None

    def _call(self, what: str, fn, partitions, *args) -> None:
        try:
            fn(sorted((tp.topic, tp.partition) for tp in partitions), *args)
        except Exception as exc:
            log.exception("handling %s partitions failed", what)
            self.failed = exc if isinstance(exc, EmbedworkerError) else ReplicaError(
                f"handling {what} partitions failed ({type(exc).__name__}: {exc}); the replica restarts to start "
                "from what is committed")
            raise

    def on_partitions_revoked(self, revoked):
        self._call("revoked", self._on_revoked, revoked, True)

    def on_partitions_lost(self, lost):
        self._call("lost", self._on_revoked, lost, False)

    def on_partitions_assigned(self, assigned):
        if self._source.paused and assigned:
            self._source.consumer.pause(*assigned)  # under backpressure: nothing fetched until resume()
        self._call("assigned", self._on_assigned, assigned)


class KafkaSource:
    def __init__(self, settings: KafkaSettings, replica: int = 0, on_error: Callable[[str], None] | None = None):
        self.settings = settings
        self.replica = replica  # the client id is `{client_id}-{replica}`: `status` maps group members to replicas
        self._on_error = on_error or (lambda kind: None)
        self._consumer: KafkaConsumer | None = None
        self.last_error: str | None = None  # the poll error in progress (None once a poll succeeds)
        self._failures = 0
        self._retry_at = 0.0
        self._logged: dict[str, float] = {}  # kind of error -> when it was last logged
        self._paused = False
        self._finished: set[TP] = set()
        self._listener: _Listener | None = None

    def setup(self, on_assigned: Callable[[list[TP]], None], on_revoked: Callable[[list[TP], bool], None]) -> None:
        """Connect and join the group. `on_revoked(partitions, clean)` gets clean=False when the
        partitions were lost (the group evicted this member): nothing may be flushed then.
        Raises SourceError (with the reason) when the broker cannot be reached or rejects the
        credentials.
        Heartbeats go every 3 s (at most a third of the session): a member hears of a rebalance
        (a replica added or removed) at its next heartbeat.
        With static membership the consumer joins as `group_instance_id(replica)`: a restarted
        replica gets its partitions back at once, without a rebalance of the others."""
        s = self.settings
        try:
            self._consumer = new_consumer(
                s, str(self.replica), group_id=s.group_id, group_instance_id=s.group_instance_id(self.replica),
                auto_offset_reset="latest" if s.start == "latest" else "earliest",
                partition_assignment_strategy=(CooperativeStickyAssignor,),
                max_poll_records=s.max_poll_records, max_poll_interval_ms=s.max_poll_interval_ms,
                session_timeout_ms=s.session_timeout_ms, heartbeat_interval_ms=min(3000, s.session_timeout_ms // 3),
                metadata_max_age_ms=s.metadata_max_age_ms)
            # Learn the topic's partitions before joining: a group leader that joins without them
            # assigns nothing until its next metadata refresh.
            if not self._consumer.partitions_for_topic(s.topic):
                log.warning("topic %s has no partitions yet (it will be picked up when it does)", s.topic)
            self._listener = _Listener(self, on_assigned, on_revoked)
            self._consumer.subscribe([s.topic], listener=self._listener)
        except KafkaError as exc:
            raise SourceError(kafka_error_message(exc, s)) from None

    @property
    def consumer(self) -> KafkaConsumer:
        """The consumer; SourceError before setup() or after close()."""
        if self._consumer is None:
            raise SourceError("the Kafka source is not open (setup() not called, or closed)")
        return self._consumer

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list:
        """Records in offset order per partition (rebalance callbacks run meanwhile). Raises
        SourceError for authentication and authorization, ReplicaError when a rebalance handler
        failed; other errors back off (this call then waits out up to `timeout_ms` of the
        backoff and returns nothing)."""
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout_ms / 1000))
            return []
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except FATAL_KAFKA_ERRORS as exc:
            raise SourceError(kafka_error_message(exc, self.settings)) from None
        except FencedInstanceIdError:
            raise self._fenced() from None
        except (KafkaError, IllegalStateError) as exc:
            if self._listener is not None and self._listener.failed is not None:
                raise self._listener.failed from None
            self._poll_failed(exc)
            return []
        if self._listener is not None and self._listener.failed is not None:
            raise self._listener.failed
        if self._failures:
            log.info("polling works again after %d failed poll(s)", self._failures)
            self._failures, self.last_error = 0, None
        self._unstick_finished_join()
        return [rec for tp in sorted(batches, key=lambda t: (t.topic, t.partition)) for rec in batches[tp]]

    def _poll_failed(self, exc: Exception) -> None:
        kind = type(exc).__name__
        self._failures += 1
        self._retry_at = time.monotonic() + min(5.0, 0.1 * 2 ** min(self._failures - 1, 6))
        self.last_error = kafka_error_message(exc, self.settings)
        self._on_error(kind)
        if self._log_due(kind):
            log.warning("poll failed (%d in a row), backing off: %s", self._failures, self.last_error)

    def _log_due(self, kind: str) -> bool:
        """Whether a problem of this kind is logged now: the first time, then once a minute."""
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) < 60.0:
            return False
        self._logged[kind] = now
        return True

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
        """Commit next-offsets per partition; False (and a warning) if the group is rebalancing.
        SourceError when this replica was fenced (another consumer took its group.instance.id)."""
        if not offsets:
            return True
        payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        try:
            self.consumer.commit(offsets=payload)
            return True
        except FencedInstanceIdError:
            raise self._fenced() from None
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            # a rebalance refuses every commit until it ends: said once, then once a minute
            level = logging.WARNING if self._log_due(type(exc).__name__) else logging.DEBUG
            log.log(level, "commit of %s skipped (tried again after the rebalance): %s", offsets, exc)
        except KafkaError as exc:
            log.warning("commit of %s failed, will retry: %s", offsets, exc)
        return False

    def _fenced(self) -> SourceError:
        """The broker gave this replica's group.instance.id to a newer consumer: this one stops."""
        return SourceError(
            f"Kafka: another consumer joined group {self.settings.group_id} as "
            f"{self.settings.group_instance_id(self.replica)!r} and took this replica's place (another "
            "`embedworker run` on this group? give each its own kafka.instance_prefix)")

    def commit_async(self, offsets: dict[TP, int]) -> None:
        """Commit without blocking (for the rebalance callbacks, which run on the IO thread)."""
        if offsets:
            payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            self.consumer.commit_async(offsets=payload)

    def assignment(self) -> list[TP]:
        return sorted((tp.topic, tp.partition) for tp in self.consumer.assignment())

    def pause(self) -> None:
        """Stop fetching from every assigned partition; poll() keeps the group membership alive."""
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.pause(*assigned)
        self._paused = True

    def resume(self) -> None:
        paused = [tp for tp in self.consumer.paused() if (tp.topic, tp.partition) not in self._finished]
        if paused:
            self.consumer.resume(*paused)
        self._paused = False

    def seek(self, tp: TP, offset: int) -> None:
        """Read this partition again from `offset` (non-blocking; from the polling thread)."""
        self.consumer.seek(TopicPartition(*tp), offset)

    def position(self, tp: TP) -> int | None:
        """The offset of the next record this consumer returns for `tp` (past transaction
        markers and gaps); None when not known yet."""
        try:
            return self.consumer.position(TopicPartition(*tp), timeout_ms=0)
        except (KafkaError, IllegalStateError, AssertionError):
            return None

    def finish(self, tp: TP) -> None:
        """Stop fetching this partition for good (a bounded replay reached its end offset)."""
        if tp not in self._finished:
            self._finished.add(tp)
            self.consumer.pause(TopicPartition(*tp))

    @property
    def paused(self) -> bool:
        return self._paused

    def lag(self) -> dict[TP, int]:
        """End offset minus position per assigned partition (for metrics)."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        try:
            ends = self.consumer.end_offsets(assigned)
            return {(tp.topic, tp.partition): max(0, ends[tp] - self.consumer.position(tp)) for tp in assigned}
        except (KafkaError, IllegalStateError):
            return {}

    def close(self, leave: bool = False) -> None:
        """Close the consumer. `leave`: the replica is drained or removed, and its partitions go
        to the others now. A static member does not leave the group when it closes (a restart
        would get its partitions back), so it is removed by its group.instance.id; without
        `leave` a static member's partitions wait for it up to `kafka.session_timeout_ms`."""
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except KafkaError as exc:
                log.warning("consumer close: %s", exc)
            self._consumer = None
            if leave:
                leave_group(self.settings, [self.replica])


def leave_group(settings: KafkaSettings, replicas: list[int]) -> bool:
    """Remove these replicas' static members from the consumer group, so that their partitions
    move to the other members at once (after a drain, or for a replica that died while it was
    being removed). Best effort: on failure the broker drops them after the session timeout.
    Returns whether the broker removed them (or nothing needed removing)."""
    if not settings.static_membership:
        return True  # dynamic members leave on close
    ids = [f"{settings.group_instance_id(r)}" for r in replicas]
    try:
        admin = new_admin(settings, "leave", request_timeout_ms=min(settings.request_timeout_ms, 10000))
    except KafkaError as exc:
        log.warning("could not leave group %s as %s: %s", settings.group_id, ids, kafka_error_message(exc, settings))
        return False
    try:
        results = admin.remove_group_members(settings.group_id, [MemberToRemove(group_instance_id=i) for i in ids])
        failed = {str(k): v.__name__ for k, v in results.items() if v.__name__ not in ("NoError", "UnknownMemberIdError")}
        if failed:
            log.warning("leaving group %s: %s", settings.group_id, failed)
        else:
            log.info("left group %s as %s", settings.group_id, ", ".join(ids))
        return not failed
    except KafkaError as exc:
        log.warning("could not leave group %s as %s: %s", settings.group_id, ids, kafka_error_message(exc, settings))
        return False
    finally:
        admin.close()
