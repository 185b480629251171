"""The worker's encode thread: tokenized documents -> token-budget batches -> vectors -> ledger.

Tokenizing runs in the encoder's thread pool (submitted by the polling thread), so it overlaps
the forward pass running here. Each `step()` launches at most one batch (batches are cut oldest
first, see workers/encoding/batching.py); on CUDA the next batch is queued before the previous
result is copied back, on the CPU a batch is finished as soon as it is computed. The stage
measures its own rate (documents per second of forward time), which bounds what the replica
holds in flight (`in_flight_limit`). Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from workers.documents import Document
from workers.encoding.encoder import Encoder
from workers.sinks.base import sink_records
from workers.stream.ledger import OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.threads import SYSTEM_CLOCK, Clock, Stage, ThroughputMeter

log = logging.getLogger("embedworker.encode")


@dataclass(slots=True)
class _DocState:
    doc: Document
    chunks: int
    vectors: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(slots=True)
class _ChunkRef:
    state: _DocState
    chunk: int
    ids: list[int]


class EncodeStage(Stage):
    name = "encode"

    def __init__(self, encoder: Encoder, ledger: OffsetLedger, metrics: WorkerMetrics, max_wait_ms: float,
                 max_padding: float, chunked: bool, window_batches: int = 8, clock: Clock = SYSTEM_CLOCK):
        super().__init__()
        self.encoder = encoder
        self.ledger = ledger
        self.metrics = metrics
        self.chunked = chunked
        self.clock = clock
        self.batcher = encoder.new_batcher(max_wait_ms, max_padding, window_batches)
        self.inbox: queue.Queue[tuple[list[Document], Future]] = queue.Queue()
        self.draining = threading.Event()
        self.meter = ThroughputMeter()  # documents finished per second of forward time
        self._ready: list = []          # batches released by the batcher, launched one per step
        self._launched: tuple | None = None  # (batch, handle, launched at): a batch on the device
        self._asynchronous = encoder.asynchronous
        self._wake = threading.Event()  # set by submit(): the thread's idle wait ends

    def submit(self, docs: list[Document], template: str) -> None:
        """Called by the polling thread: tokenize in the pool, encode here."""
        texts = [d.embed_text(template) for d in docs]
        self.inbox.put((docs, self.encoder.submit_tokenize(texts)))
        self._wake.set()

    def in_flight_limit(self, seconds: float, start: int, cap: int) -> int:
        """How many documents the replica may hold: `seconds` of its measured rate, `start`
        until a rate is measured; never more than `cap`, never fewer than 8."""
        rate = self.meter.rate
        wanted = start if rate is None else int(rate * seconds)
        return max(8, min(cap, wanted))

    @property
    def idle_now(self) -> bool:
        """Nothing to encode: no tokenized documents waiting, nothing batched or launched."""
        return self.inbox.empty() and len(self.batcher) == 0 and not self._ready and self._launched is None

    def drain_and_stop(self, timeout: float) -> bool:
        """Encode everything submitted (flushing the batcher), then end the thread."""
        self.draining.set()
        return self.stop_when_idle(timeout)

    def stop_when_idle(self, timeout: float) -> bool:
        deadline = self.clock.monotonic() + timeout
        while self.alive and not self.idle_now and self.error is None and self.clock.monotonic() < deadline:
            self._stop_requested.wait(0.02)
        return self.stop(max(0.0, deadline - self.clock.monotonic()))

    def idle(self, timeout: float) -> None:
        """Wait for a submission, or until the oldest batched item is due."""
        deadline = self.batcher.next_deadline()
        wait = timeout if deadline is None else max(0.0, min(timeout, deadline - self.clock.monotonic()))
        if wait > 0 and self._wake.wait(wait):
            self._wake.clear()

    def step(self) -> bool:
        """Take what was tokenized, launch the next ready batch (oldest first), finish the one
        launched before. True if it did anything."""
        took = self._take_inbox()  # waits for tokenizing, if any is still running
        started = self.clock.monotonic()
        if not self._ready:
            flush = self.draining.is_set() and self.inbox.empty()
            self._ready = self.batcher.pop_ready(started, flush=flush)
        batch = self._ready.pop(0) if self._ready else None
        previous, self._launched = self._launched, None
        if batch is not None:
            handle = self.encoder.launch([ref.ids for ref in batch.items], batch.padded_len)
            self._launched = (batch, handle, started)
        if previous is not None:
            self._finish(*previous)
        if self._launched is not None and not self._asynchronous:
            self._finish(*self._launched)  # computed already: its documents go to the sinks now
            self._launched = None
        if batch is not None or previous is not None:
            self.metrics.encode_busy(self.clock.monotonic() - started)
            return True
        return took

    def _take_inbox(self) -> bool:
        items = []
        try:
            while True:
                items.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        now = self.clock.monotonic()
        for docs, future in items:
            tokenized = future.result()
            counts = Counter(tokenized.doc) if self.chunked else None
            states = [_DocState(d, counts[i] if counts is not None else 1) for i, d in enumerate(docs)]
            add = self.batcher.add
            for ids, doc_index, chunk in zip(tokenized.ids, tokenized.doc, tokenized.chunk):
                add(_ChunkRef(states[doc_index], chunk, ids), len(ids), now)
        return bool(items)

    def _finish(self, batch, handle, launched_at: float) -> None:
        vectors = self.encoder.collect(handle)
        seconds = self.clock.monotonic() - launched_at
        self.metrics.observe_batch(len(batch.items), batch.real_tokens, batch.padded_tokens, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch: %d texts, %d tokens (%d padded, length %d), %.1f ms", len(batch.items),
                      batch.real_tokens, batch.padded_tokens, batch.padded_len, seconds * 1000)
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        ready = []
        for ref, vec in zip(batch.items, vectors):
            state = ref.state
            state.vectors[ref.chunk] = vec
            if len(state.vectors) == state.chunks:
                o = state.doc.origin
                ready.append(((o.topic, o.partition), o.offset, sink_records(state.doc, state.vectors, self.chunked, now)))
        self.meter.add(len(ready), seconds)
        self.ledger.fill_many(ready)
        self.metrics.embedded(len(ready))
