"""The worker's encode thread: tokenized documents -> token-budget batches -> vectors -> ledger.

Tokenizing runs in the encoder's thread pool (submitted by the polling thread), so it overlaps
the forward pass running here; on CUDA the next batch is queued before the previous result is
copied back. Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
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


class EncodeStage:
    def __init__(self, encoder: Encoder, ledger: OffsetLedger, metrics: WorkerMetrics, max_wait_ms: float,
                 max_padding: float, chunked: bool):
        self.encoder = encoder
        self.ledger = ledger
        self.metrics = metrics
        self.chunked = chunked
        self.batcher = encoder.new_batcher(max_wait_ms, max_padding)
        self.inbox: queue.Queue[tuple[list[Document], Future]] = queue.Queue()
        self.draining = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="encode", daemon=True)
        self._idle = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def submit(self, docs: list[Document], template: str) -> None:
        """Called by the polling thread: tokenize in the pool, encode here."""
        texts = [d.embed_text(template) for d in docs]
        self.inbox.put((docs, self.encoder.submit_tokenize(texts)))

    def drain_and_stop(self, timeout: float) -> bool:
        self.draining.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                self._take_inbox()
                now = time.monotonic()
                flush = self.draining.is_set() and self.inbox.empty()
                batches = self.batcher.pop_ready(now, flush=flush)
                if batches:
                    self._encode(batches)
                elif flush and len(self.batcher) == 0:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported to the polling thread, which stops
            log.exception("encode thread failed")
            self.error = exc

    def _take_inbox(self) -> None:
        deadline = self.batcher.next_deadline()
        timeout = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
        items = []
        try:
            items.append(self.inbox.get(timeout=timeout) if timeout > 0 else self.inbox.get_nowait())
            while True:
                items.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        for docs, future in items:
            tokenized = future.result()
            counts = Counter(tokenized.doc) if self.chunked else None
            states = [_DocState(d, counts[i] if counts is not None else 1) for i, d in enumerate(docs)]
            now = time.monotonic()
            add = self.batcher.add
            for ids, doc_index, chunk in zip(tokenized.ids, tokenized.doc, tokenized.chunk):
                add(_ChunkRef(states[doc_index], chunk, ids), len(ids), now)

    def _encode(self, batches) -> None:
        started = time.perf_counter()
        launched = None
        for batch in batches:
            t0 = time.perf_counter()
            handle = self.encoder.launch([ref.ids for ref in batch.items], batch.padded_len)
            if launched is not None:
                self._finish(*launched)
            launched = (batch, handle, t0)
        if launched is not None:
            self._finish(*launched)
        self.metrics.encode_busy(time.perf_counter() - started)

    def _finish(self, batch, handle, t0: float) -> None:
        vectors = self.encoder.collect(handle)
        seconds = time.perf_counter() - t0
        self.metrics.observe_batch(len(batch.items), batch.real_tokens, batch.padded_tokens, seconds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch: %d texts, %d tokens (%d padded, length %d), %.1f ms", len(batch.items),
                      batch.real_tokens, batch.padded_tokens, batch.padded_len, seconds * 1000)
        now = datetime.now(UTC)
        ready = []
        for ref, vec in zip(batch.items, vectors):
            state = ref.state
            state.vectors[ref.chunk] = vec
            if len(state.vectors) == state.chunks:
                o = state.doc.origin
                ready.append(((o.topic, o.partition), o.offset, sink_records(state.doc, state.vectors, self.chunked, now)))
        self.ledger.fill_many(ready)
        self.metrics.embedded(len(ready))
