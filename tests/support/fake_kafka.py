"""An in-memory Kafka for the simulation and the unit tests of the worker core: topics, one
consumer group with static members, and the dead-letter topic.

`FakeKafka` is the cluster: it keeps the records, the group's assignment and committed offsets,
and refuses commits from a member that does not own the partition (as a broker refuses an old
generation). `FakeSource` is one replica's consumer, with the interface of
`workers.kafka.source.KafkaSource`: rebalance callbacks run inside `poll()`, partitions assigned
while paused stay paused, a failed callback makes `poll()` raise ReplicaError. `FakeDeadLetters`
has the interface of `DeadLetterPublisher`; acknowledgements arrive when `deliver()` is called
(the producer's thread). Nothing here sleeps, nothing opens a socket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.documents import Rejection
from workers.errors import EmbedworkerError, ReplicaError

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple = ()
    marker: bool = False  # a transaction marker: takes an offset, never returned by a poll


@dataclass
class Commit:
    replica: int
    tp: TP
    offset: int
    at: float


class FakeKafka:
    """The brokers: partitions of records, one group, the DLQ. `now()` stamps records and commits."""

    def __init__(self, topic: str, partitions: int, now: Callable[[], float]):
        self.topic = topic
        self.partitions: dict[TP, list[FakeRecord]] = {(topic, p): [] for p in range(partitions)}
        self.now = now
        self.members: dict[int, FakeSource] = {}   # live group members by replica (static ids)
        self.owner: dict[TP, int] = {}             # the assignment
        self.committed: dict[TP, int] = {}
        self.commits: list[Commit] = []
        self.refused_commits = 0
        self.dlq: list[tuple[Rejection, float]] = []

    def produce(self, partition: int, key: bytes | None, value: bytes | None) -> FakeRecord:
        tp = (self.topic, partition)
        rec = FakeRecord(self.topic, partition, len(self.partitions[tp]), key, value, int(self.now() * 1000))
        self.partitions[tp].append(rec)
        return rec

    def produce_marker(self, partition: int) -> None:
        """A transaction's commit marker: the next offset goes to it, and no consumer sees it."""
        tp = (self.topic, partition)
        self.partitions[tp].append(FakeRecord(self.topic, partition, len(self.partitions[tp]), None, None,
                                              int(self.now() * 1000), marker=True))

    def end(self, tp: TP) -> int:
        return len(self.partitions[tp])

    # ---- the group ----

    def join(self, source: FakeSource) -> None:
        """A member joins (or a restarted static member comes back: it gets its partitions back,
        nobody else moves)."""
        back = [tp for tp, r in self.owner.items() if r == source.replica]
        self.members[source.replica] = source
        if back:
            source.notify_assigned(back)
        else:
            self.rebalance()

    def leave(self, replica: int) -> None:
        """A member leaves cleanly: its partitions go to the others."""
        if self.members.pop(replica, None) is not None:
            for tp in [tp for tp, r in self.owner.items() if r == replica]:
                del self.owner[tp]
            self.rebalance()

    def evict(self, replica: int) -> None:
        """The member missed its session (frozen, killed): its partitions go to the others now;
        it hears that it lost them at its next poll, if it ever polls again."""
        source = self.members.pop(replica, None)
        lost = [tp for tp, r in self.owner.items() if r == replica]
        for tp in lost:
            del self.owner[tp]
        if source is not None and lost:
            source.notify_lost(lost)
        self.rebalance()

    def rebalance(self) -> None:
        """Give unowned partitions to members, then even out: a partition moves only from a member
        holding more than its share (sticky, as the cooperative assignor). A member whose
        partition moves hears 'revoked' at its next poll, the new owner 'assigned'."""
        if not self.members:
            return
        ids = sorted(self.members)
        share = -(-len(self.partitions) // len(ids))
        held = {r: sorted(tp for tp, o in self.owner.items() if o == r) for r in ids}
        free = [tp for tp in sorted(self.partitions) if tp not in self.owner]
        for r in ids:
            while len(held[r]) > share:
                free.append(held[r].pop())
        moved: dict[int, list[TP]] = {}
        for tp in free:
            r = min(ids, key=lambda i: (len(held[i]), i))
            previous = self.owner.get(tp)
            if previous is not None and previous != r and previous in self.members:
                self.members[previous].notify_revoked([tp])
            self.owner[tp] = r
            held[r].append(tp)
            moved.setdefault(r, []).append(tp)
        for r, tps in moved.items():
            self.members[r].notify_assigned(tps)

    def commit(self, source: FakeSource, offsets: dict[TP, int]) -> bool:
        if source.closed or self.members.get(source.replica) is not source or \
                any(self.owner.get(tp) != source.replica for tp in offsets):
            self.refused_commits += 1
            return False  # an old generation, or a member that was evicted: refused
        for tp, offset in offsets.items():
            self.committed[tp] = offset
            self.commits.append(Commit(source.replica, tp, offset, self.now()))
        return True


class FakeSource:
    """One replica's consumer (the interface of KafkaSource)."""

    def __init__(self, kafka: FakeKafka, replica: int, idle_sleep: bool = False):
        self.kafka = kafka
        self.replica = replica
        self.idle_sleep = idle_sleep  # with real threads: an empty poll waits its timeout, as a consumer does
        self.last_error: str | None = None
        self.closed = False
        self.fail_next_callback = False  # the simulation's fault: a rebalance handler raises
        self._events: list[tuple[str, list[TP]]] = []
        self._on_assigned: Callable | None = None
        self._on_revoked: Callable | None = None
        self._assigned: set[TP] = set()
        self._positions: dict[TP, int] = {}
        self._paused_tps: set[TP] = set()
        self._finished: set[TP] = set()
        self._paused = False

    # the group tells
    def notify_assigned(self, tps: list[TP]) -> None:
        self._events.append(("assigned", tps))

    def notify_revoked(self, tps: list[TP]) -> None:
        self._events.append(("revoked", tps))

    def notify_lost(self, tps: list[TP]) -> None:
        self._events.append(("lost", tps))

    def setup(self, on_assigned, on_revoked) -> None:
        self._on_assigned, self._on_revoked = on_assigned, on_revoked
        self.kafka.join(self)

    def _deliver(self) -> None:
        events, self._events = self._events, []
        for kind, tps in events:
            if kind == "assigned":
                for tp in tps:
                    self._assigned.add(tp)
                    self._positions[tp] = max(0, self.kafka.committed.get(tp, 0))
                    self._paused_tps.discard(tp)
                    if self._paused:
                        self._paused_tps.add(tp)
                self._call(self._on_assigned, sorted(tps))
            else:
                for tp in tps:
                    self._assigned.discard(tp)
                    self._positions.pop(tp, None)
                self._call(self._on_revoked, sorted(tps), kind == "revoked")
        if any(kind == "lost" for kind, _ in events) and self.replica not in self.kafka.members:
            self.kafka.join(self)  # kafka-python rejoins after a loss

    def _call(self, fn, *args) -> None:
        """As KafkaSource's listener: a failed handler is the replica's failure (the project's own
        errors as they are)."""
        if self.fail_next_callback:
            self.fail_next_callback = False
            raise ReplicaError("handling partitions failed (simulated); the replica restarts")
        assert fn is not None
        try:
            fn(*args)
        except EmbedworkerError:
            raise
        except Exception as exc:
            raise ReplicaError(f"handling partitions failed ({type(exc).__name__}: {exc})") from exc

    def poll(self, timeout_ms: int, max_records: int | None = None) -> list:
        if self._events:
            self._deliver()
        out: list[FakeRecord] = []
        limit = max_records or 500
        for tp in sorted(self._assigned):
            if tp in self._paused_tps or tp in self._finished:
                continue
            records = self.kafka.partitions[tp]
            pos = self._positions[tp]
            take = records[pos:pos + (limit - len(out))]
            out.extend(r for r in take if not r.marker)
            self._positions[tp] = pos + len(take)
            if len(out) >= limit:
                break
        if not out and self.idle_sleep:
            time.sleep(timeout_ms / 1000)
        return out

    def commit(self, offsets: dict[TP, int]) -> bool:
        return self.kafka.commit(self, offsets) if offsets else True

    def commit_async(self, offsets: dict[TP, int]) -> None:
        if offsets:
            self.kafka.commit(self, offsets)

    def pause(self) -> None:
        self._paused_tps |= self._assigned
        self._paused = True

    def resume(self) -> None:
        self._paused_tps = set()
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def seek(self, tp: TP, offset: int) -> None:
        self._positions[tp] = offset

    def finish(self, tp: TP) -> None:
        self._finished.add(tp)

    def position(self, tp: TP) -> int | None:
        return self._positions.get(tp)

    def assignment(self) -> list[TP]:
        return sorted(self._assigned)

    def lag(self) -> dict[TP, int]:
        return {tp: self.kafka.end(tp) - self._positions[tp] for tp in self._assigned}

    def close(self, leave: bool = False) -> None:
        self.closed = True
        if leave:
            self.kafka.leave(self.replica)


@dataclass
class FakeDeadLetters:
    """The DLQ producer: a rejection is in the topic once `deliver()` runs (the producer thread),
    unless `refusing` (the topic is unreachable): then it waits for `resend_unacked`."""

    kafka: FakeKafka
    refusing: bool = False
    last_error: str | None = None
    _unacked: dict = field(default_factory=dict)
    _outbox: list = field(default_factory=list)

    def setup(self) -> None:
        pass

    def publish(self, rej: Rejection, on_acked: Callable[[], None]) -> None:
        o = rej.origin
        self._unacked[(o.topic, o.partition, o.offset)] = (rej, on_acked, self.kafka.now())
        self._outbox.append((rej, on_acked))

    def deliver(self) -> bool:
        """The producer thread's round: send what waits; True if anything was acknowledged."""
        if self.refusing or not self._outbox:
            if self.refusing and self._outbox:
                self.last_error = "KafkaTimeoutError: the DLQ topic is unreachable (simulated)"
            return False
        outbox, self._outbox = self._outbox, []
        for rej, on_acked in outbox:
            o = rej.origin
            self.kafka.dlq.append((rej, self.kafka.now()))
            self._unacked.pop((o.topic, o.partition, o.offset), None)
            on_acked()
        self.last_error = None
        return True

    def resend_unacked(self, older_than_s: float = 30.0) -> None:
        queued = {id(r) for r, _ in self._outbox}
        now = self.kafka.now()
        self._outbox.extend((rej, cb) for rej, cb, sent in self._unacked.values()
                            if id(rej) not in queued and now - sent > older_than_s)

    def unacked(self) -> tuple[int, float]:
        return len(self._unacked), 0.0

    def failure(self) -> BaseException | None:
        return None

    def flush(self, timeout_s: float = 30.0) -> None:
        self.deliver()

    def close(self) -> None:
        pass
