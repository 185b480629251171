"""What every sink gets and promises.

A sink receives `SinkRecord`s in offset order per (topic, partition) from one thread. It
reports, per partition, the offset through which everything it was given is durable; the
worker commits nothing past the lowest of those over all sinks. A sink that cannot take data
right now raises `SinkBackpressureError` (the caller keeps the records and retries later); one
that will never work (bad credentials, wrong dimension) raises `SinkError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

import numpy as np

from workers.documents import Document
from workers.errors import SinkBackpressureError

TP = tuple[str, int]
T = TypeVar("T")
GIVE_UP_AFTER_S = 300.0  # how long a batch job waits out a sink refusing data before it fails


@dataclass(slots=True)
class SinkRecord:
    """One vector (or one deletion) with its metadata and where it came from. Made once per
    document on the hot path (slots, not frozen: a frozen dataclass sets each field through
    object.__setattr__); treat it as read-only."""

    id: str
    op: str                            # "upsert" or "delete"
    topic: str
    partition: int
    offset: int
    vector: np.ndarray | None = None   # float32 (dim,), L2-normalized; None for deletes
    chunk: int = 0
    chunks: int = 1
    chunked: bool = False              # element names carry '#chunk' (chunking enabled)
    title: str | None = None
    url: str | None = None
    source: str | None = None
    lang: str | None = None
    published_at: datetime | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    text: str | None = None            # the document's text, on its first chunk (the lake keeps it)
    event_time_ms: int | None = None   # the record's Kafka timestamp
    ingested_at: datetime | None = None

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


def sink_records(doc: Document, vectors: dict[int, np.ndarray] | None, chunked: bool,
                 now: datetime) -> list[SinkRecord]:
    """The records a document becomes: one per chunk (an upsert), or one deletion."""
    o = doc.origin
    pieces: list[tuple[np.ndarray | None, int, int]]
    if doc.op == "delete" or vectors is None:
        pieces = [(None, 0, 0)]
    else:
        pieces = [(vectors[k], k, len(vectors)) for k in range(len(vectors))]
    return [SinkRecord(id=doc.id, op=doc.op, topic=o.topic, partition=o.partition, offset=o.offset, vector=vector,
                       chunk=chunk, chunks=chunks, chunked=chunked, title=doc.title, url=doc.url, source=doc.source,
                       lang=doc.lang, published_at=doc.published_at, attrs=doc.attrs,
                       text=doc.text if chunk == 0 and vector is not None else None, event_time_ms=o.timestamp_ms,
                       ingested_at=now)
            for vector, chunk, chunks in pieces]


class Sink(Protocol):
    name: str

    def setup(self) -> None:
        """Open connections; called once in the actor before the first write. Raises SinkError."""

    def assign(self, partitions: list[TP]) -> None:
        """Partitions this worker now owns (called on every assignment, before their records)."""

    def write(self, records: list[SinkRecord]) -> None:
        """Take records (offset order per partition). Raises SinkBackpressureError or SinkError."""

    def flush(self, now: float, force: bool = False) -> None:
        """Make buffered data durable if due (or always with `force`). Raises SinkBackpressureError."""

    def durable_offsets(self) -> dict[TP, int]:
        """Per partition, the offset through which all records given so far are durable."""

    def revoke(self, partitions: list[TP], flush: bool = True) -> dict[TP, int]:
        """Flush (best effort; not when `flush` is False) and forget partitions this worker no
        longer owns; returns their durable offsets as they were just before forgetting them."""

    def failure(self) -> BaseException | None:
        """What ended a thread of the sink's own (a lake writer), None while it is healthy (and
        for sinks without one); the polling thread checks it at every poll."""

    def close(self) -> None:
        """Flush what can be flushed and release connections; called once at shutdown."""

    # Optional: `background_stall_s() -> float`, the seconds a write of the sink's own thread (a
    # lake writer) has been running, 0 when none is; the sink stage pauses the input when it
    # passes workers.sink_stall_s, as for a write of its own that hangs (see sink_stall_s).


def background_stall_s(sink: Sink) -> float:
    """A sink's `background_stall_s()`, 0 for a sink that writes only in the caller's thread."""
    stall = getattr(sink, "background_stall_s", None)
    return stall() if stall is not None else 0.0


def retry_backpressure(write: Callable[[], T], give_up_after_s: float = GIVE_UP_AFTER_S,
                       sleep: Callable[[float], None] = time.sleep,
                       now: Callable[[], float] = time.monotonic) -> T:
    """The retry policy of a sink refusing data, for the jobs that may wait (a backfill unit,
    restore): `write()` again after each SinkBackpressureError's `retry_after_s` (the sink's own
    backoff), raising the last one once `give_up_after_s` have passed. The stream does not block:
    its sink stage waits the same delays with the input paused (workers/stream/sink_stage.py)."""
    deadline = now() + give_up_after_s
    while True:
        try:
            return write()
        except SinkBackpressureError as exc:
            if now() + exc.retry_after_s > deadline:
                raise
            sleep(exc.retry_after_s)
