"""Which partitions a replica owns, and how far each is committed.

Two threads meet here. Kafka's IO thread runs the rebalance listener (`assigned`, `revoked`)
while the polling thread waits inside `poll()`; the polling thread takes each poll's records
and commits (`commit`). `lock` makes a rebalance happen wholly before or after the polling
thread takes a poll's records, and each partition's epoch, bumped at every change of its
assignment, tells the polling thread that records it polled before the change belong to an
assignment that has ended (`ours`): they are not taken, and the partition is rewound to them if
it is still ours. Heartbeats wait for the listener, so it does bounded work: a revoke flushes the
sinks (the sink stage's lock for at most one write attempt) and commits asynchronously.
"""

from __future__ import annotations

import logging
import threading

from workers.kafka.source import KafkaSource
from workers.sinks.base import TP
from workers.stream.ledger import OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.sink_stage import SinkStage

log = logging.getLogger("embedworker.worker")


class PartitionOwnership:
    def __init__(self, replica: int, ledger: OffsetLedger, sink_stage: SinkStage, metrics: WorkerMetrics,
                 source: KafkaSource, stop_offsets: dict[str, int]):
        self.replica, self.ledger, self.sink_stage, self.metrics = replica, ledger, sink_stage, metrics
        self.source = source
        self.stop_offsets = stop_offsets  # bounded replays: "topic:partition" -> the end offset
        self.lock = threading.Lock()
        self._epochs: dict[TP, int] = {}
        self._due: dict[TP, int] = {}     # positions reached but not yet committed

    def epochs(self) -> dict[TP, int]:
        """Taken before a poll: what `ours` compares the poll's records with."""
        with self.lock:
            return dict(self._epochs)

    def ours(self, tp: TP, epochs: dict[TP, int]) -> bool:
        """Whether records of `tp` polled under `epochs` may be taken (called holding `lock`)."""
        return self._epochs.get(tp) == epochs.get(tp) and tp in self.sink_stage.owned

    def assigned(self, partitions: list[TP]) -> None:
        """Rebalance listener (IO thread), new partitions only (incremental rebalancing): they
        start afresh from their committed offsets."""
        log.info("replica %s assigned %s", self.replica, partitions)
        with self.lock:
            for tp in partitions:
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
                self._due.pop(tp, None)
            self.ledger.drop(partitions)
            self.sink_stage.assign(partitions)

    def revoked(self, partitions: list[TP], clean: bool) -> None:
        """Rebalance listener (IO thread), partitions that move elsewhere: flush what the sinks
        hold for them, commit what is durable (asynchronously), forget the rest; the next owner
        reads it again. Lost partitions (clean=False) are forgotten without writing anything."""
        log.info("replica %s %s %s", self.replica, "revoked" if clean else "lost", partitions)
        self.metrics.forget(partitions)
        with self.lock:
            for tp in partitions:
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self.sink_stage.revoke(partitions, flush=clean)
            self._due.update(self.ledger.committable())
            offsets = {tp: self._due.pop(tp) for tp in partitions if tp in self._due}
            if clean and offsets:
                self.source.commit_async(offsets)
                self.metrics.committed(offsets)
            self.ledger.drop(partitions)

    def commit(self) -> None:
        """Commit every partition whose position moved (polling thread); a commit refused (say,
        during a rebalance) is tried again next time, for the partitions still ours."""
        with self.lock:
            self._due.update(self.ledger.committable())
            offsets = {tp: off for tp, off in self._due.items() if tp in self.sink_stage.owned}
            self._due = dict(offsets)
        if offsets and self.source.commit(offsets):
            self.metrics.committed(offsets)
            with self.lock:
                for tp, off in offsets.items():
                    if self._due.get(tp) == off:
                        del self._due[tp]

    def finish_bounded(self) -> None:
        """Bounded replays (polling thread): a partition whose position reached its end offset
        with nothing left in flight is done, and its end is committed even where no record sits
        just before it (a transaction marker or a compacted gap at the tail), so the replay can
        finish."""
        if not self.stop_offsets:
            return
        with self.lock:
            owned = [tp for tp in self.sink_stage.owned if f"{tp[0]}:{tp[1]}" in self.stop_offsets]
        for tp in owned:
            end = self.stop_offsets[f"{tp[0]}:{tp[1]}"]
            position = self.source.position(tp)
            if position is not None and position >= end and self.ledger.pending_in(tp) == 0:
                self.source.finish(tp)
                with self.lock:
                    if tp in self.sink_stage.owned and self._due.get(tp, -1) < end:
                        self._due[tp] = end
