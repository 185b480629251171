"""The worker's sink thread: ledger -> every sink, in offset order per partition -> durability.

Records taken from the ledger stay here until every sink has them; a sink that raises
SinkBackpressureError is retried after its `retry_after_s` (the polling thread sees `blocked`
and pauses the partitions meanwhile). Writing the same records again after a failure is safe:
Redis upserts, and the Parquet sink skips offsets it already holds. The lock serializes this
thread with rebalance handling, so no partition is written after it was revoked. Any other
exception (a SinkError: credentials, a wrong dimension; or a bug) ends the thread and is the
replica's failure (workers/stream/threads.py).
"""

from __future__ import annotations

import logging
import threading

from workers.errors import SinkBackpressureError
from workers.sinks.base import TP, Sink, SinkRecord, background_stall_s
from workers.stream.ledger import OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.threads import SYSTEM_CLOCK, Clock, Stage

log = logging.getLogger("embedworker.sinks")


class SinkStage(Stage):
    name = "sinks"

    def __init__(self, sinks: list[Sink], ledger: OffsetLedger, metrics: WorkerMetrics, stall_s: float = 2.0,
                 clock: Clock = SYSTEM_CLOCK):
        super().__init__()
        self.clock = clock
        self.take_limit = 2048  # records taken per round (the worker sets it to its in-flight bound)
        self.sinks = sinks
        self.ledger = ledger
        self.metrics = metrics
        self.lock = threading.Lock()
        self.owned: set[TP] = set()
        self.pending: list[SinkRecord] = []
        self.blocked_until = 0.0
        self.stall_s = stall_s
        self._busy_since: float | None = None  # when the write or flush in progress began
        self._busy_sink: str | None = None  # the sink that write or flush is in
        self.last_error: str | None = None

    @property
    def blocked(self) -> bool:
        """True while a sink refuses data: during the retry delay, until the records it refused
        are written, and while a write or flush has run longer than `stall_s` (a sink that
        hangs pauses the input within seconds, before any timeout or retry gives up)."""
        return self.clock.monotonic() < self.blocked_until or self.last_error is not None or self.stalled_s >= self.stall_s

    @property
    def stalled_s(self) -> float:
        """Seconds the write or flush in progress has been running (0 when none is), or a sink's
        own writer thread its write, whichever is longer."""
        return self._stalled()[0]

    @property
    def stalled_sink(self) -> str | None:
        """The sink whose write has run longest (for status: which service hangs); None when none runs."""
        return self._stalled()[1]

    def _stalled(self) -> tuple[float, str | None]:
        since, name = self._busy_since, self._busy_sink
        longest = (0.0, None) if since is None else (self.clock.monotonic() - since, name)
        for sink in self.sinks:
            seconds = background_stall_s(sink)
            if seconds > longest[0]:
                longest = (seconds, sink.name)
        return longest

    def idle(self, timeout: float) -> None:
        self.ledger.wait_for_work(timeout)

    def step(self, force_flush: bool = False) -> bool:
        """One round: take ready records, write them to every sink, flush what is due, report
        durability. Returns True if it wrote anything."""
        with self.lock:
            if self.clock.monotonic() < self.blocked_until and not force_flush:
                return False  # waiting out the retry delay
            if not self.pending:
                self.pending = [rec for tp, _, payload in self.ledger.take_ready(limit=self.take_limit)
                                if tp in self.owned for rec in payload]
            wrote = bool(self.pending)
            self._busy_since = self.clock.monotonic()
            try:
                if self.pending:
                    self._write(self.pending)
                    self.metrics.written([r.event_time_ms for r in self.pending if r.chunk == 0], self.clock.time())
                    self.pending = []
                self._flush(force_flush)
                self.last_error = None
            except SinkBackpressureError as exc:
                self.blocked_until = self.clock.monotonic() + exc.retry_after_s
                if self.last_error != str(exc):
                    log.warning("sink backpressure, pausing input: %s", exc)
                self.last_error = str(exc)
                wrote = False
            finally:
                self._busy_since = None
            self.ledger.mark_durable(self.durable())
            return wrote

    def _write(self, records: list[SinkRecord]) -> None:
        for sink in self.sinks:
            t0 = self.clock.monotonic()
            self._busy_sink = sink.name
            try:
                sink.write(records)
            except SinkBackpressureError:
                self.metrics.sink_error(sink.name)
                raise
            self.metrics.sink_write(sink.name, len(records), self.clock.monotonic() - t0)

    def _flush(self, force: bool) -> None:
        now = self.clock.time()
        for sink in self.sinks:
            t0 = self.clock.monotonic()
            self._busy_sink = sink.name
            try:
                sink.flush(now, force=force)
            except SinkBackpressureError:
                self.metrics.sink_error(sink.name)
                raise
            self.metrics.sink_write(sink.name, 0, self.clock.monotonic() - t0)

    def durable(self) -> dict[TP, int]:
        """Per partition, the lowest durable offset over all sinks."""
        return lowest_durable([sink.durable_offsets() for sink in self.sinks])

    def assign(self, partitions: list[TP]) -> None:
        with self.lock:
            for sink in self.sinks:
                sink.assign(partitions)
            self.owned.update(partitions)

    def revoke(self, partitions: list[TP], flush: bool = True) -> None:
        """Flush these partitions' buffered data (unless `flush` is False: lost partitions),
        report what is durable to the ledger, then forget them. Records not yet written are
        dropped: they are not committed, so the partitions' next owner reads them again."""
        with self.lock:
            gone = set(partitions)
            self.owned -= gone
            self.pending = [r for r in self.pending if r.tp not in gone]
            self.ledger.mark_durable(lowest_durable([sink.revoke(partitions, flush) for sink in self.sinks]))

    def close(self) -> None:
        with self.lock:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception as exc:  # noqa: BLE001 - closing is best effort
                    log.warning("closing sink %s: %s", sink.name, exc)


def lowest_durable(per_sink: list[dict[TP, int]]) -> dict[TP, int]:
    """Per partition every sink reports, the lowest of their durable offsets: what all of them hold."""
    if not per_sink:
        return {}
    keys = set(per_sink[0]).intersection(*per_sink[1:])
    return {tp: min(offsets[tp] for offsets in per_sink) for tp in keys}
