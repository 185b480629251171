"""In-memory sinks for the simulation and the worker core's unit tests, with faults on demand.

`FakeRedis` is a vector index with the fencing rule of the real sink's script
(workers/sinks/fenced_writes.py): an element remembers the record that wrote it, and a write
from an older record of the same partition is refused. It logs every write and refusal, so a
checker can tell a refused stale writer from an owner writing out of order. `FakeVectorSink`
is one replica's Redis sink over it.

`FakeLake` is a table with per-partition transaction versions and compare-and-swap commits, as
the Delta table's application transactions; `SimLakeSink` is the real `ParquetSink` (buffers,
sealing, the writer's round, durability) with its storage replaced by it, and no thread: the
simulation runs its writer round (`step_writer`).

Faults, set by the simulation on the shared store: `transient` (SinkBackpressureError),
`permanent` (SinkError), `broken` (RuntimeError, as a bug would), `slow_s` (seconds a write
takes, reported through `take_cost()`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.support.fake_encoder import EPOCH
from workers.errors import SinkBackpressureError, SinkError
from workers.settings import ParquetSettings
from workers.sinks.base import TP, SinkRecord
from workers.sinks.parquet import ParquetSink, Piece


@dataclass
class Faults:
    transient: bool = False
    permanent: bool = False
    broken: bool = False
    slow_s: float = 0.0

    def raise_if_any(self, what: str) -> None:
        if self.permanent:
            raise SinkError(f"{what}: refused for good (simulated)")
        if self.broken:
            raise RuntimeError(f"{what}: a bug (simulated)")
        if self.transient:
            raise SinkBackpressureError(f"{what}: unavailable (simulated)", retry_after_s=0.5)


@dataclass
class Write:
    element: str
    source: TP
    offset: int
    op: str
    replica: int
    at: float
    refused: bool


@dataclass
class FakeRedis:
    faults: Faults = field(default_factory=Faults)
    elements: dict[str, tuple[TP, int, str]] = field(default_factory=dict)  # element -> (source, offset, op)
    log: list[Write] = field(default_factory=list)
    order_problems: list[str] = field(default_factory=list)  # a sink that went back within one ownership
    cost: float = 0.0

    def apply(self, rec: SinkRecord, replica: int, at: float) -> bool:
        """The fenced write of one record; False when refused as stale."""
        current = self.elements.get(rec.id)
        stale = current is not None and current[0] == rec.tp and current[1] > rec.offset
        self.log.append(Write(rec.id, rec.tp, rec.offset, rec.op, replica, at, stale))
        if not stale:
            self.elements[rec.id] = (rec.tp, rec.offset, rec.op)
        return not stale

    def present(self) -> dict[str, tuple[TP, int]]:
        """Elements in the index (deletions are tombstones, not present)."""
        return {e: (tp, off) for e, (tp, off, op) in self.elements.items() if op != "delete"}


class FakeVectorSink:
    name = "redis"

    def __init__(self, redis: FakeRedis, replica: int, now):
        self.redis, self.replica, self.now = redis, replica, now
        self._durable: dict[TP, int] = {}
        self._last: dict[TP, int] = {}  # the last offset written since the partition was assigned
        self.stale = 0

    def setup(self) -> None:
        pass

    def assign(self, partitions: list[TP]) -> None:
        for tp in partitions:
            self._durable.pop(tp, None)
            self._last.pop(tp, None)

    def write(self, records: list[SinkRecord]) -> None:
        self.redis.cost += self.redis.faults.slow_s
        self.redis.faults.raise_if_any("Redis")
        for rec in records:
            if rec.offset < self._last.get(rec.tp, -1):
                self.redis.order_problems.append(f"replica {self.replica} wrote {rec.tp}:{rec.offset} after "
                                                 f"{self._last[rec.tp]} while it owned the partition")
            self._last[rec.tp] = rec.offset
            self.stale += not self.redis.apply(rec, self.replica, self.now())
            self._durable[rec.tp] = max(self._durable.get(rec.tp, -1), rec.offset)

    def flush(self, now: float, force: bool = False) -> None:
        pass

    def durable_offsets(self) -> dict[TP, int]:
        return dict(self._durable)

    def revoke(self, partitions: list[TP], flush: bool = True) -> dict[TP, int]:
        return {tp: self._durable.pop(tp) for tp in partitions if tp in self._durable}

    def failure(self) -> BaseException | None:
        return None

    def close(self) -> None:
        pass


@dataclass
class LakeRow:
    tp: TP
    offset: int
    id: str
    op: str
    replica: int
    at: float


@dataclass
class FakeLake:
    """Per-partition versions (the last offset held) and rows; commits are compare-and-swap."""

    faults: Faults = field(default_factory=Faults)
    versions: dict[TP, int] = field(default_factory=dict)
    rows: list[LakeRow] = field(default_factory=list)
    refused: int = 0
    cost: float = 0.0

    def commit(self, pieces: list[Piece], expected: dict[TP, int], replica: int, at: float) -> dict[TP, int]:
        """Like DeltaLakeSink._write_pieces: a partition someone else advanced keeps only the
        rows past it; returns what the table holds per partition afterwards."""
        self.cost += self.faults.slow_s
        self.faults.raise_if_any("lake")
        actual = {p.tp: self.versions.get(p.tp, -1) for p in pieces}
        if any(actual[p.tp] != expected.get(p.tp, -1) for p in pieces):
            self.refused += 1
            pieces = [Piece(p.tp, rows, rows[0].offset, p.last) for p in pieces
                      if (rows := [r for r in p.rows if r.offset > actual[p.tp]])]
        for p in pieces:
            self.rows.extend(LakeRow(r.tp, r.offset, r.id, r.op, replica, at) for r in p.rows)
            self.versions[p.tp] = p.last
        return {**actual, **{p.tp: p.last for p in pieces}}


class SimLakeSink(ParquetSink):
    """The real ParquetSink over a FakeLake, its writer run by the simulation."""

    threaded = False

    def __init__(self, lake: FakeLake, replica: int, now, max_rows: int = 50, max_seconds: float = 1.0):
        super().__init__(ParquetSettings(path="sim://lake", max_rows_per_file=max_rows, max_seconds=max_seconds),
                         "sim", "sim-model", None, 4, "passage: ")
        self.lake, self.replica, self.now = lake, replica, now

    def setup(self) -> None:
        pass  # no folder, and no writer thread: the simulation calls step_writer()

    def write(self, records: list[SinkRecord], now: float | None = None) -> None:
        super().write(records, EPOCH + self.now() if now is None else now)  # buffers age in simulated time

    def _read_held(self, partitions: list[TP]) -> None:
        self.lake.faults.raise_if_any("lake")
        with self._cond:
            self._held.update({tp: self.lake.versions.get(tp, -1) for tp in partitions})

    def _write_pieces(self, pieces: list[Piece], expected: dict[TP, int]) -> dict[TP, int]:
        return self.lake.commit(pieces, expected, self.replica, self.now())
