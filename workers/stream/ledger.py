"""Every polled record from poll to commit, per partition, in offset order.

A slot is added for each record when it is polled. A document's slot is filled when its
vectors are ready; a delete's slot is filled at once; a rejected record's slot never goes to
the sinks and is done once the dead-letter write is acknowledged. Sinks get filled slots in
offset order per partition (so the last write of an id wins, and a Parquet file holds a
contiguous offset range); a slot given to the sinks is done once every sink reports it
durable. The commit position of a partition is the offset of its first slot not yet done.

Pure and thread-safe (one lock): the polling thread adds, the encode thread fills, the sink
thread takes and reports durability, the DLQ producer's callback acknowledges.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

TP = tuple[str, int]  # (topic, partition)

DOC, DELETE, REJECT = "doc", "delete", "reject"


@dataclass
class _Slot:
    offset: int
    kind: str
    payload: Any = None
    filled: bool = False
    size: int = 0               # the record's bytes, for the in-flight byte bound
    released: bool = False
    acked: bool = False


class _Partition:
    def __init__(self) -> None:
        self.slots: deque[_Slot] = deque()
        self.by_offset: dict[int, _Slot] = {}
        self.release_index = 0     # slots[:release_index] have been handed to the sinks (or skipped)
        self.durable = -1          # every released sink slot <= this is durable in all sinks
        self.next_commit: int | None = None


class OffsetLedger:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._cond = threading.Condition()
        self._unreleased = 0
        self._unreleased_bytes = 0

    def add(self, tp: TP, offset: int, kind: str, payload: Any = None, size: int = 0) -> None:
        """Called by the polling thread for every record, in offset order per partition."""
        self.add_many([(tp, offset, kind, payload, size)])

    def add_many(self, entries: list[tuple[TP, int, str, Any, int]]) -> None:
        """`add` for one poll's records at once (one lock round trip); entries are
        (partition, offset, kind, payload, record bytes)."""
        notify = False
        with self._cond:
            for tp, offset, kind, payload, size in entries:
                part = self._parts.get(tp)
                if part is None:
                    part = self._parts[tp] = _Partition()
                if offset in part.by_offset or (part.slots and offset <= part.slots[-1].offset):
                    continue  # delivered again (a rewind after a rebalance race): already tracked
                slot = _Slot(offset, kind, payload, filled=kind != DOC, size=size)
                part.slots.append(slot)
                part.by_offset[offset] = slot
                if kind != REJECT:
                    self._unreleased += 1
                    self._unreleased_bytes += size
                notify = notify or slot.filled
            if notify:
                self._cond.notify_all()

    def fill(self, tp: TP, offset: int, payload: Any) -> None:
        """Called by the encode thread when a document's vectors are ready."""
        self.fill_many([(tp, offset, payload)])

    def fill_many(self, filled: list[tuple[TP, int, Any]]) -> None:
        """Called by the encode thread with the documents of one batch whose vectors are ready."""
        if not filled:
            return
        with self._cond:
            for tp, offset, payload in filled:
                part = self._parts.get(tp)
                slot = part.by_offset.get(offset) if part else None
                if slot is None or slot.filled:
                    continue  # the partition was revoked meanwhile
                slot.payload, slot.filled = payload, True
            self._cond.notify_all()

    def ack_reject(self, tp: TP, offset: int) -> None:
        """Called when the dead-letter write of a rejected record is acknowledged."""
        with self._cond:
            part = self._parts.get(tp)
            slot = part.by_offset.get(offset) if part else None
            if slot is not None:
                slot.acked = True

    def take_ready(self, timeout: float = 0.0, limit: int = 4096) -> list[tuple[TP, int, Any]]:
        """Filled slots not yet handed to the sinks, in offset order per partition, stopping at
        the first slot still being encoded. Waits up to `timeout` seconds for one."""
        with self._cond:
            out = self._collect_ready(limit)
            if not out and timeout > 0:
                self._cond.wait(timeout)
                out = self._collect_ready(limit)
            return out

    def wait_for_work(self, timeout: float) -> None:
        """Block until a slot is filled (or `timeout` seconds pass)."""
        with self._cond:
            self._cond.wait(timeout)

    def _collect_ready(self, limit: int) -> list[tuple[TP, int, Any]]:
        out: list[tuple[TP, int, Any]] = []
        for tp, part in self._parts.items():
            while part.release_index < len(part.slots) and len(out) < limit:
                slot = part.slots[part.release_index]
                if slot.kind == REJECT:
                    part.release_index += 1
                    continue
                if not slot.filled:
                    break
                slot.released = True
                part.release_index += 1
                self._unreleased -= 1
                self._unreleased_bytes -= slot.size
                out.append((tp, slot.offset, slot.payload))
                slot.payload = None
        return out

    def mark_durable(self, durable: dict[TP, int]) -> None:
        """Called by the sink thread: per partition, the offset through which all sinks are durable."""
        with self._cond:
            for tp, offset in durable.items():
                part = self._parts.get(tp)
                if part is not None and offset > part.durable:
                    part.durable = offset

    def committable(self) -> dict[TP, int]:
        """Partitions whose commit position moved, with the new position (next offset to read)."""
        moved: dict[TP, int] = {}
        with self._cond:
            for tp, part in self._parts.items():
                slots, advanced = part.slots, False
                while slots:
                    s = slots[0]
                    done = s.acked if s.kind == REJECT else (s.released and s.offset <= part.durable)
                    if not done:
                        break
                    slots.popleft()
                    del part.by_offset[s.offset]
                    if part.release_index > 0:  # a rejection acknowledged before the sinks' pass skipped it
                        part.release_index -= 1
                    part.next_commit, advanced = s.offset + 1, True
                if advanced and part.next_commit is not None:
                    moved[tp] = part.next_commit
        return moved

    def drop(self, tps: list[TP]) -> None:
        """Forget partitions (revoked): their records will be read again by the next owner."""
        with self._cond:
            for tp in tps:
                part = self._parts.pop(tp, None)
                if part is not None:
                    gone = [s for s in part.slots if not s.released and s.kind != REJECT]
                    self._unreleased -= len(gone)
                    self._unreleased_bytes -= sum(s.size for s in gone)

    def unreleased(self) -> int:
        """Records polled but not yet handed to the sinks (being validated, tokenized, encoded)."""
        with self._cond:
            return self._unreleased

    def unreleased_bytes(self) -> int:
        """Record bytes of the records `unreleased()` counts."""
        with self._cond:
            return self._unreleased_bytes

    def unreleased_in(self, tps: list[TP]) -> int:
        """Records of these partitions not yet handed to the sinks."""
        with self._cond:
            return sum(1 for tp in tps if tp in self._parts for s in self._parts[tp].slots
                       if not s.released and s.kind != REJECT)

    def pending_in(self, tp: TP) -> int:
        """Records of this partition polled and not yet committable."""
        with self._cond:
            part = self._parts.get(tp)
            return len(part.slots) if part is not None else 0

    def pending(self) -> int:
        """Records polled and not yet committable."""
        with self._cond:
            return sum(len(p.slots) for p in self._parts.values())

    def unacked_rejects(self) -> list[tuple[TP, int, Any]]:
        with self._cond:
            return [(tp, s.offset, s.payload) for tp, p in self._parts.items() for s in p.slots
                    if s.kind == REJECT and not s.acked]

    def partitions(self) -> list[TP]:
        with self._cond:
            return list(self._parts)
