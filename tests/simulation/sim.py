"""A seeded simulation of the worker core: the real EmbeddingWorker (its polling step), OffsetLedger,
EncodeStage, SinkStage and ParquetSink, over in-memory Kafka, Redis and lake (tests/support), in
simulated time, under a schedule of faults drawn from a seed.

Each replica's threads (poll, encode, sinks, lake writer, DLQ producer) are steps the scheduler
runs one at a time: the thread whose turn comes first (its last step's simulated cost, or an idle
wait, plus a seeded jitter) runs next, so every interleaving is one a real machine could produce,
and the same seed gives the same run. Faults: replicas added, killed (restarted by "Ray" later,
taking their partitions back by static membership, or losing them after the session timeout),
frozen and thawed (past the session timeout: evicted, then writing late), Redis and lake outages,
slow and failing writes, a slow or failing forward, a refusing DLQ, a failing rebalance handler,
an exception in each thread. Then everything heals, the replicas catch up, a few more records
flow, and `check()` asserts the invariants (see Simulation.check). `python -m tests.simulation
--seed N` replays one seed with its trace.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from operator import attrgetter

from tests.simulation.sim_worker import SimWorker
from tests.support.fake_encoder import SimClock
from tests.support.fake_kafka import FakeKafka
from tests.support.fake_sinks import FakeLake, FakeRedis
from workers.errors import EmbedworkerError, ReplicaError
from workers.settings import (
    BatchingSettings,
    DocumentSettings,
    KafkaSettings,
    ModelSettings,
    ParquetSettings,
    RedisSettings,
    WorkersSettings,
)

NEXT_AT = attrgetter("next_at")
SESSION_TIMEOUT_S = 10.0
LATENCY_BOUND_S = 8.0     # a record produced with nothing failing is durable within this
MAX_SIM_S = 400.0         # a schedule that has not converged by then fails


class SimFailure(AssertionError):
    """An invariant broken under a seed."""


@dataclass
class Thread:
    name: str
    replica: int
    step: object            # a callable returning True when it did work
    next_at: float = 0.0
    idle: float = 0.02


@dataclass
class Replica:
    index: int
    worker: SimWorker | None = None
    frozen_until: float = -1.0
    dead_until: float | None = None   # killed or failed: restarted by "Ray" then
    evict_at: float | None = None     # the session timeout of a frozen or dead member
    restarts: int = 0


@dataclass
class Produced:
    tp: tuple[str, int]
    offset: int
    id: str
    op: str                 # upsert, delete, bad
    at: float


@dataclass
class Simulation:
    seed: int
    trace: list[str] = field(default_factory=list)
    verbose: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        r = self.rng
        self.clock = SimClock()
        self.partitions = r.randint(1, 4)
        self.kafka = FakeKafka("sim", self.partitions, self.clock.monotonic)
        self.redis, self.lake = FakeRedis(), FakeLake()
        self.produced: list[Produced] = []
        self.ids = [f"doc{i}" for i in range(r.randint(3, 25))]
        self.replicas: dict[int, Replica] = {}
        self.threads: list[Thread] = []
        self.failures: list[str] = []
        self.settings = dict(
            kafka=KafkaSettings(topic="sim", commit_interval_ms=r.choice([100, 200, 500]), max_poll_records=r.choice([5, 20])),
            model=ModelSettings(name="sim-model"),
            batching=BatchingSettings(max_wait_ms=r.choice([0, 20]), window_batches=r.choice([1, 2, 8])),
            documents=DocumentSettings(),
            redis=RedisSettings(),
            parquet=ParquetSettings(max_rows_per_file=r.choice([5, 50]), max_seconds=r.choice([0.3, 1.0])),
            workers=WorkersSettings(max_in_flight=r.choice([8, 64]), max_in_flight_s=r.choice([0.5, 2.0]), num_gpus=0),
        )
        self.seconds_per_token = r.choice([0.0001, 0.001, 0.003])

    # ---- running ----

    def log(self, message: str) -> None:
        line = f"{self.clock.now:8.3f} {message}"
        self.trace.append(line)
        if self.verbose:
            print(line)

    def start_replica(self, index: int) -> None:
        rep = self.replicas.setdefault(index, Replica(index))
        worker = SimWorker(self, index, **self.settings)
        try:
            worker.setup()
        except (ReplicaError, EmbedworkerError) as exc:  # e.g. the lake unreadable at assignment
            self.log(f"replica {index} could not start: {exc}")
            rep.dead_until = self.clock.now + 1.0
            return
        rep.worker, rep.dead_until, rep.evict_at, rep.frozen_until = worker, None, None, -1.0
        self.log(f"replica {index} started (restart {rep.restarts})")
        now = self.clock.now
        self.threads = [t for t in self.threads if t.replica != index]
        self.threads += [Thread("poll", index, worker.poll_step, now), Thread("encode", index, worker.encode_stage.run_once, now),
                         Thread("sinks", index, worker.sink_stage.run_once, now),
                         Thread("lake", index, worker.lake.step_writer, now), Thread("dlq", index, worker.dlq.deliver, now)]

    def fail_replica(self, rep: Replica, exc: BaseException, restart_in: float) -> None:
        worker = rep.worker
        assert worker is not None
        if not isinstance(exc, ReplicaError | EmbedworkerError):
            self.failures.append(f"replica {rep.index} failed with an untyped {type(exc).__name__}: {exc}")
        self.log(f"replica {rep.index} failed: {type(exc).__name__}: {exc}")
        try:
            worker._close(leave=False)   # what run()'s finally does
        except ReplicaError as close_exc:
            self.log(f"close: {close_exc}")
        rep.worker = None
        rep.restarts += 1
        rep.dead_until = self.clock.now + restart_in
        rep.evict_at = self.clock.now + SESSION_TIMEOUT_S
        self.threads = [t for t in self.threads if t.replica != rep.index]

    def run_thread(self, t: Thread) -> None:
        rep = self.replicas[t.replica]
        worker = rep.worker
        assert worker is not None
        if t.name == "poll":
            failed_before = self._failed_thread(worker)
            try:
                worked = bool(t.step())  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001 - a replica failure, checked and restarted
                self.fail_replica(rep, exc, self.rng.uniform(0.5, 3.0))
                return
            if failed_before:
                self.failures.append(f"replica {rep.index} polled on while its {failed_before} thread was dead")
            if worker.ledger.unreleased() > worker.workers_settings.max_in_flight + 1:
                self.failures.append(f"replica {rep.index} holds {worker.ledger.unreleased()} documents in flight, over "
                                     f"workers.max_in_flight {worker.workers_settings.max_in_flight}")
            cost = 0.0
        else:
            worked = bool(t.step())  # type: ignore[operator]
            cost = worker.encoder.take_cost() + self.redis_cost() + self.lake_cost()
        if worked:
            t.idle = 0.02
            t.next_at = self.clock.now + cost + self.rng.uniform(0.0, 0.01)
        else:  # an idle thread waits longer and longer (up to 0.5 s) until it finds work
            t.next_at = self.clock.now + t.idle + self.rng.uniform(0.0, 0.01)
            t.idle = min(0.5, t.idle * 2)

    @staticmethod
    def _failed_thread(worker: SimWorker) -> str | None:
        for name, stage in (("encode", worker.encode_stage), ("sinks", worker.sink_stage)):
            if stage.error is not None:
                return name
        return "lake writer" if worker.lake.failure() is not None else None

    def redis_cost(self) -> float:
        cost, self.redis.cost = self.redis.cost, 0.0
        return cost

    def lake_cost(self) -> float:
        cost, self.lake.cost = self.lake.cost, 0.0
        return cost

    def advance(self, until: float, events: list | None = None) -> None:
        """Run due events, restarts, session timeouts and threads in time order until `until`."""
        events = events if events is not None else []
        while True:
            self.housekeeping()
            thread = min(self.threads, key=NEXT_AT, default=None)  # ties: the earlier in the list
            at_thread = thread.next_at if thread is not None else float("inf")
            at_event = events[0][0] if events else float("inf")
            at_house = min(self._pending_times(), default=float("inf"))
            at = min(at_thread, at_event, at_house)
            if at > until:
                self.clock.now = max(self.clock.now, until)
                return
            self.clock.now = max(self.clock.now, at)
            if at == at_event:
                events.pop(0)[1]()
            elif at == at_thread and thread is not None:
                self.run_thread(thread)

    def _pending_times(self) -> list[float]:
        now = self.clock.now
        return [x for rep in self.replicas.values() for x in (rep.dead_until, rep.evict_at)
                if x is not None and (x > now or (x == rep.dead_until and rep.worker is None and not self.permanent_fault()))]

    def housekeeping(self) -> None:
        """The group's session timeouts and Ray's restarts, when their time comes."""
        now = self.clock.now
        for rep in list(self.replicas.values()):
            if rep.evict_at is not None and now >= rep.evict_at:
                rep.evict_at = None
                if rep.worker is None or rep.frozen_until > now:
                    self.log(f"replica {rep.index} evicted (session timeout)")
                    self.kafka.evict(rep.index)
            if rep.worker is None and rep.dead_until is not None and now >= rep.dead_until and not self.permanent_fault():
                self.start_replica(rep.index)

    def permanent_fault(self) -> bool:
        return self.redis.faults.permanent or self.lake.faults.permanent

    # ---- the workload ----

    def produce(self, n: int, spread_s: float, start: float) -> list:
        """`n` records at random times in [start, start + spread_s): upserts, deletions, bad ones."""
        events = []
        for _ in range(n):
            at = start + self.rng.uniform(0.0, spread_s)
            events.append((at, self._produce_one))
        return events

    def _produce_one(self) -> None:
        r = self.rng
        doc_id = r.choice(self.ids)
        partition = sum(doc_id.encode()) % self.partitions
        kind = r.random()
        if kind < 0.08:
            value, op = b"{not json", "bad"
        elif kind < 0.14:
            value, op = json.dumps({"id": doc_id, "text": "  "}).encode(), "bad"
        elif kind < 0.24:
            value, op = json.dumps({"id": doc_id, "op": "delete"}).encode(), "delete"
        else:
            text = "word " * r.randint(2, 60)
            value, op = json.dumps({"id": doc_id, "text": text, "title": f"t{len(self.produced)}"}).encode(), "upsert"
        rec = self.kafka.produce(partition, doc_id.encode(), value)
        self.produced.append(Produced((rec.topic, rec.partition), rec.offset, doc_id, op, self.clock.now))

    def faults(self, start: float, end: float, count: int) -> list:
        """`count` faults at random times in [start, end), each with its heal."""
        r = self.rng
        events = []
        for _ in range(count):
            at = r.uniform(start, end)
            kind = r.choice(["add", "kill", "freeze", "freeze_long", "redis_down", "lake_down", "redis_slow",
                             "encode_slow", "encode_error", "sink_bug", "lake_bug", "dlq_down", "callback_error",
                             "permanent"])
            events.extend(self._fault(kind, at, r.uniform(0.5, 25.0)))
        return events

    def _fault(self, kind: str, at: float, duration: float) -> list:
        r = self.rng

        def live() -> list[Replica]:
            return [rep for rep in self.replicas.values() if rep.worker is not None]

        def each(fn):
            def run():
                reps = live()
                if reps:
                    fn(r.choice(reps))
            return run

        def setter(obj, name, value, label):
            def run():
                setattr(obj, name, value)
                self.log(f"fault {label}: {name}={value}")
            return run

        if kind == "add":
            return [(at, lambda: len(self.replicas) < 3 and self.start_replica(len(self.replicas)))]
        if kind == "kill":
            return [(at, each(lambda rep: self.fail_replica(rep, ReplicaError("killed (simulated kill -9)"),
                                                            r.uniform(0.5, 15.0))))]
        if kind in ("freeze", "freeze_long"):
            length = duration if kind == "freeze" else SESSION_TIMEOUT_S + duration

            def freeze(rep: Replica) -> None:
                rep.frozen_until = self.clock.now + length
                for t in self.threads:  # its threads run again when it thaws, in their old order
                    if t.replica == rep.index:
                        t.next_at = max(t.next_at, rep.frozen_until)
                if length > SESSION_TIMEOUT_S:
                    rep.evict_at = self.clock.now + SESSION_TIMEOUT_S
                self.log(f"replica {rep.index} frozen for {length:.1f} s")
            return [(at, each(freeze))]
        if kind == "redis_down":
            return [(at, setter(self.redis.faults, "transient", True, "redis")),
                    (at + duration, setter(self.redis.faults, "transient", False, "redis"))]
        if kind == "lake_down":
            return [(at, setter(self.lake.faults, "transient", True, "lake")),
                    (at + duration, setter(self.lake.faults, "transient", False, "lake"))]
        if kind == "redis_slow":
            return [(at, setter(self.redis.faults, "slow_s", 3.0, "redis")),
                    (at + duration, setter(self.redis.faults, "slow_s", 0.0, "redis"))]
        if kind == "encode_slow":
            return [(at, each(lambda rep: setattr(rep.worker.encoder, "slowdown", 20.0)))]  # type: ignore[union-attr]
        if kind == "encode_error":
            return [(at, each(lambda rep: setattr(rep.worker.encoder, "fail_next", True)))]  # type: ignore[union-attr]
        if kind == "sink_bug":
            return [(at, setter(self.redis.faults, "broken", True, "redis")),
                    (at + 0.05, setter(self.redis.faults, "broken", False, "redis"))]
        if kind == "lake_bug":
            return [(at, setter(self.lake.faults, "broken", True, "lake")),
                    (at + 0.05, setter(self.lake.faults, "broken", False, "lake"))]
        if kind == "dlq_down":
            return [(at, each(lambda rep: setattr(rep.worker.dlq, "refusing", True))),  # type: ignore[union-attr]
                    (at + duration, lambda: [setattr(rep.worker.dlq, "refusing", False) for rep in live()])]  # type: ignore[union-attr]
        if kind == "callback_error":
            return [(at, each(lambda rep: setattr(rep.worker.source, "fail_next_callback", True)))]  # type: ignore[union-attr]
        assert kind == "permanent"
        target = r.choice([self.redis.faults, self.lake.faults])
        return [(at, setter(target, "permanent", True, "permanent")),
                (at + duration, setter(target, "permanent", False, "permanent"))]

    def heal(self) -> None:
        for faults in (self.redis.faults, self.lake.faults):
            faults.transient = faults.permanent = faults.broken = False
            faults.slow_s = 0.0
        for rep in self.replicas.values():
            if rep.frozen_until > self.clock.now:
                for t in self.threads:
                    if t.replica == rep.index:
                        t.next_at = min(t.next_at, self.clock.now)
            rep.frozen_until = min(rep.frozen_until, self.clock.now)
            if rep.worker is not None:
                rep.worker.encoder.slowdown = 1.0
                rep.worker.dlq.refusing = False
        self.log("healed")

    def converged(self) -> bool:
        live = [rep for rep in self.replicas.values() if rep.worker is not None]
        return bool(live) and all(self.kafka.committed.get(tp, 0) >= self.kafka.end(tp) for tp in self.kafka.partitions)

    def run(self) -> None:
        r = self.rng
        self.start_replica(0)
        if r.random() < 0.5:
            self.start_replica(1)
        active = r.uniform(5.0, 30.0)
        events = self.produce(r.randint(0, 30), 0.01, 0.0)                # a backlog at the start
        events += self.produce(r.randint(5, 60), active, 0.0)              # a stream
        events += self.faults(0.0, active, r.randint(0, 4))
        events.sort(key=lambda e: e[0])
        self.advance(active + 12.0, events)
        self.advance(self.clock.now)  # the events left are heals after the end: healed below
        self.heal()
        deadline = self.clock.now + MAX_SIM_S
        while not self.converged():
            if self.clock.now > deadline:
                raise SimFailure(f"not converged after {MAX_SIM_S:g} s: committed {self.kafka.committed}, ends "
                                 f"{ {tp: self.kafka.end(tp) for tp in self.kafka.partitions} }")
            self.advance(self.clock.now + 1.0)
        self.tail_start = len(self.produced)
        self.advance(self.clock.now + 6.0, sorted(self.produce(r.randint(1, 10), 3.0, self.clock.now), key=lambda e: e[0]))
        while not self.converged():
            if self.clock.now > deadline + 60:
                raise SimFailure("the tail did not converge")
            self.advance(self.clock.now + 1.0)

    # ---- the invariants ----

    def check(self) -> None:
        """After the run:
        - every record is in every sink once (the lake: one row per offset; Redis: superseded by
          or equal to its last version) or, if bad, in the dead-letter topic;
        - Redis holds, per id, its last record (its highest offset), a deletion as a tombstone;
        - commits never go back, and nothing was committed before every sink held it durably;
        - each replica wrote each partition in offset order while it owned it;
        - no replica failed with an untyped error, or polled on with a dead thread;
        - a record produced with nothing failing was durable within LATENCY_BOUND_S."""
        problems = list(self.failures)
        lake_rows = defaultdict(list)
        for row in self.lake.rows:
            lake_rows[(row.tp, row.offset)].append(row)
        dlq: dict[tuple, float] = {}  # each rejected record, when it first reached the DLQ
        for rej, at in self.kafka.dlq:
            key = (rej.origin.topic, rej.origin.partition, rej.origin.offset)
            dlq[key] = min(at, dlq.get(key, at))
        last: dict[str, Produced] = {}
        for p in self.produced:
            key = (p.tp, p.offset)
            if p.op == "bad":
                if (*p.tp, p.offset) not in dlq:
                    problems.append(f"bad record {p.tp}:{p.offset} is not in the dead-letter topic")
                if lake_rows.get(key):
                    problems.append(f"bad record {p.tp}:{p.offset} is in the lake")
                continue
            rows = lake_rows.get(key, [])
            if len(rows) != 1:
                problems.append(f"record {p.tp}:{p.offset} ({p.id}) is in the lake {len(rows)} times")
            if p.id not in last or p.offset > last[p.id].offset:
                last[p.id] = p
        for doc_id, p in last.items():
            stored = self.redis.elements.get(doc_id)
            if stored is None or stored[1] != p.offset or stored[2] != p.op:
                problems.append(f"Redis holds {stored} for {doc_id}, its last record is {p.op} at {p.tp}:{p.offset}")
        by_tp = defaultdict(list)
        for c in self.kafka.commits:
            by_tp[c.tp].append(c)
        writes = defaultdict(list)
        for w in self.redis.log:
            writes[(w.element, w.source)].append(w)
        records = defaultdict(list)
        for p in self.produced:
            records[p.tp].append(p)
        for tp, commits in by_tp.items():
            for a, b in zip(commits, commits[1:]):
                if b.offset < a.offset:
                    problems.append(f"the commit of {tp} went back from {a.offset} to {b.offset} at {b.at:.3f}")
            checked = 0
            for c in commits:
                for p in records[tp][checked:c.offset]:
                    problems.extend(self._durable_by(p, c.at, lake_rows, dlq, writes))
                checked = max(checked, c.offset)
        problems.extend(self.redis.order_problems)
        for p in self.produced[self.tail_start:]:
            if p.op == "bad":
                continue
            rows = lake_rows.get((p.tp, p.offset), [])
            durable = max([r.at for r in rows] + [w.at for w in writes[(p.id, p.tp)] if w.offset >= p.offset][:1])
            if durable - p.at > LATENCY_BOUND_S:
                problems.append(f"record {p.tp}:{p.offset} took {durable - p.at:.1f} s to be durable with nothing "
                                f"failing (bound {LATENCY_BOUND_S:g} s)")
        if problems:
            raise SimFailure("\n".join(problems[:20]))

    @staticmethod
    def _durable_by(p: Produced, at: float, lake_rows, dlq, writes) -> list[str]:
        if p.op == "bad":
            return [] if dlq.get((*p.tp, p.offset), float("inf")) <= at else [
                f"{p.tp}:{p.offset} committed at {at:.3f} before the dead-letter topic had it"]
        out = []
        if not any(row.at <= at for row in lake_rows.get((p.tp, p.offset), [])):
            out.append(f"{p.tp}:{p.offset} committed at {at:.3f} before the lake held it")
        if not any(w.at <= at and w.offset >= p.offset for w in writes[(p.id, p.tp)]):
            out.append(f"{p.tp}:{p.offset} committed at {at:.3f} before Redis held it")
        return out


def run_seed(seed: int, verbose: bool = False) -> Simulation:
    """One schedule, run and checked; SimFailure names the seed and the command that replays it.
    The replicas' own log lines are silenced (they are expected: faults are the point)."""
    sim = Simulation(seed, verbose=verbose)
    logger = logging.getLogger("embedworker")
    level = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    try:
        sim.run()
        sim.check()
    except SimFailure as exc:
        raise SimFailure(f"seed {seed}: {exc}\nreplay: .venv/bin/python -m tests.simulation --seed {seed} -v") from None
    finally:
        logger.setLevel(level)
    return sim
