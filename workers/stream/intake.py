"""A poll's records taken in: each becomes a document (to the encode stage), a deletion (ready at
once) or a rejection (to the dead-letter topic), with a slot in the ledger, in offset order.

Runs on the polling thread. Records are taken under the ownership lock (workers/stream/
partitions.py), so a rebalance happens wholly before or after: records of a partition whose
assignment changed since the poll began are not taken, and the partition is rewound to them if
it is still ours. Rejections are published after the lock is let go: a send may wait for the
dead-letter topic's metadata, and the rebalance listener (heartbeats wait for it) needs the
lock. A rejection of a partition revoked meanwhile is published anyway: harmless, its next owner
publishes it again (the DLQ is at-least-once), and its acknowledgement finds no slot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from workers.documents import DocumentLimits, RecordOrigin, Rejection, parse_record
from workers.kafka.dead_letters import DeadLetterPublisher
from workers.kafka.source import KafkaSource
from workers.settings import ModelSettings
from workers.sinks.base import sink_records
from workers.stream.encode_stage import EncodeStage
from workers.stream.ledger import DELETE, DOC, REJECT, OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.partitions import PartitionOwnership
from workers.stream.threads import Clock


class RecordIntake:
    def __init__(self, topic: str, model: ModelSettings, limits: DocumentLimits, partitions: PartitionOwnership,
                 ledger: OffsetLedger, encode_stage: EncodeStage, dlq: DeadLetterPublisher, source: KafkaSource,
                 metrics: WorkerMetrics, clock: Clock):
        self.topic, self.model, self.limits = topic, model, limits
        self.partitions, self.ledger, self.encode_stage = partitions, ledger, encode_stage
        self.dlq, self.source, self.metrics, self.clock = dlq, source, metrics, clock

    def take(self, records: list, epochs: dict) -> None:
        """Validate and track one poll's records (`epochs`: taken before the poll)."""
        with self.partitions.lock:
            rejections = self._take_owned(records, epochs)
        for rejection in rejections:
            self.metrics.rejected(rejection.code)
            self.dlq.publish(rejection, self._acknowledge(rejection.origin))

    def _acknowledge(self, o: RecordOrigin) -> Callable[[], None]:
        """What the DLQ producer's thread calls once the broker has the rejection."""
        return lambda: self.ledger.ack_reject((o.topic, o.partition), o.offset)

    def _take_owned(self, records: list, epochs: dict) -> list[Rejection]:
        docs = []
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        rewind: dict = {}
        taken = deleted = 0
        entries: list = []
        rejections: list[Rejection] = []
        partition_state: dict = {}  # per partition of this poll: (still ours, replay end offset)
        stop_offsets = self.partitions.stop_offsets
        for rec in records:
            tp = (rec.topic, rec.partition)
            state = partition_state.get(tp)
            if state is None:
                state = partition_state[tp] = (self.partitions.ours(tp, epochs),
                                               stop_offsets.get(f"{rec.topic}:{rec.partition}"))
            ours, end = state
            if not ours:
                if tp in self.partitions.sink_stage.owned:
                    rewind[tp] = min(rewind.get(tp, rec.offset), rec.offset)
                continue
            if end is not None and rec.offset >= end:
                self.source.finish(tp)  # bounded replay: this partition is done
                continue
            origin = RecordOrigin(rec.topic, rec.partition, rec.offset, rec.key, rec.timestamp,
                                  tuple(rec.headers) if rec.headers else ())
            taken += 1
            result = parse_record(rec.value, origin, self.limits)
            if isinstance(result, Rejection):
                entries.append((tp, rec.offset, REJECT, None, 0))
                rejections.append(result)
            elif result.op == "delete":
                entries.append((tp, rec.offset, DELETE, sink_records(result, None, self.model.chunking.enabled, now), 0))
                deleted += 1
            else:
                entries.append((tp, rec.offset, DOC, None, len(rec.value)))
                docs.append(result)
        self.ledger.add_many(entries)  # before the DLQ writes: their acknowledgements find the slots
        if deleted:
            self.metrics.deleted(deleted)
        self.metrics.consumed(self.topic, taken)
        for tp, offset in rewind.items():
            self.source.seek(tp, offset)
        if docs:
            self.encode_stage.submit(docs, self.model.text_template)
        return rejections
