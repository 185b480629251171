"""Continuous batching for the query service: requests that arrive while the model runs go in
its next call, together.

One task per replica feeds the encoder. With the model idle, a request's batch starts at once
(a lone client pays no batching wait); while a batch runs, the requests that arrive queue, and the
next batch takes all of them (up to `serve.max_batch_size` requests), so batches grow with the
load instead of with a timer. `serve.batch_wait_ms` (0 by default) lets a batch smaller than that
wait a little for company first. Each batch is one hop to the model's own thread: the texts of all
its requests tokenized together (one call per prefix), each request's lengths checked on its own
(a text too long is that request's 400, not its neighbours'), then one encoder call. Nothing here
touches HTTP, Ray or Redis.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from pipelines.serving.http_contract import ApiError, check_lengths
from pipelines.serving.metrics import ServeMetrics


@dataclass
class EmbedRequest:
    """One request's texts; `single` when `input` was a string (its errors then say `input`)."""

    texts: list[str]
    input_type: str  # "query" or "passage"
    truncate: bool
    single: bool
    answer: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


@dataclass
class Embedded:
    vectors: np.ndarray  # (len(texts), dim) float32
    tokens: int          # the usage reported to the client


class QueryBatcher:
    """Built by a replica in its constructor (cheap; its task starts with the first request, in
    the replica's event loop). `embed` is called by the request handlers."""

    def __init__(self, encoder, max_batch_size: int, batch_wait_ms: float, metrics: ServeMetrics):
        self.encoder = encoder
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_ms / 1000
        self.metrics = metrics
        self._queue: list[EmbedRequest] = []
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _model_thread(self) -> ThreadPoolExecutor:
        """The model's own thread: a batch never waits behind the requests' Redis calls in the
        event loop's default executor (32 searches in flight took all of its threads)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="embed")
        return self._executor

    async def embed(self, texts: list[str], input_type: str, truncate: bool = False, single: bool = True) -> Embedded:
        """The vectors of one request's texts. Raises ApiError (a text over model.max_tokens
        without `truncate`), or what the encoder raised (the service's 500 in words)."""
        request = EmbedRequest(texts, input_type, truncate, single)
        self._queue.append(request)
        if self._task is None or self._task.done():
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._feed())
        assert self._arrived is not None
        self._arrived.set()
        return await request.answer

    async def _feed(self) -> None:
        """The replica's one feeding loop: a batch of what waits, then the next."""
        assert self._arrived is not None
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            if self.batch_wait_s and len(self._queue) < self.max_batch_size:
                await asyncio.sleep(self.batch_wait_s)
            while self._queue:
                batch = self._queue[:self.max_batch_size]
                del self._queue[:self.max_batch_size]
                batch = [r for r in batch if not r.answer.done()]  # a client that left while waiting
                if not batch:
                    continue
                try:
                    answers = await asyncio.get_running_loop().run_in_executor(self._model_thread(), self._run, batch)
                except Exception as exc:  # noqa: BLE001 - the encoder's failure is each request's answer (a 500)
                    answers = [exc] * len(batch)
                for request, answer in zip(batch, answers):
                    if request.answer.done():
                        continue
                    if isinstance(answer, BaseException):
                        request.answer.set_exception(answer)
                    else:
                        request.answer.set_result(answer)

    def _run(self, batch: list[EmbedRequest]) -> list[Embedded | ApiError]:
        """In the model's thread: every request's texts tokenized, checked and embedded in one call."""
        enc = self.encoder
        prefixes = [enc.query_prefix if r.input_type == "query" else enc.document_prefix for r in batch]
        ids_of: list = [None] * len(batch)  # each request's token ids, then its ApiError if refused
        for prefix in set(prefixes):
            members = [i for i, p in enumerate(prefixes) if p == prefix]
            ids = enc.tokenizer.tokenize_whole([t for i in members for t in batch[i].texts], prefix)
            for i in members:
                ids_of[i], ids = ids[:len(batch[i].texts)], ids[len(batch[i].texts):]
        for i, request in enumerate(batch):
            ids = ids_of[i]
            try:
                check_lengths([len(x) for x in ids], enc.max_tokens, request.single, request.truncate)
            except ApiError as refused:
                ids_of[i] = refused
                continue
            long = [j for j, x in enumerate(ids) if len(x) > enc.max_tokens]
            if long:  # asked to truncate: cut as the worker cuts
                cut = enc.tokenizer.tokenize([request.texts[j] for j in long], prefixes[i], chunked=False).ids
                for j, x in zip(long, cut):
                    ids[j] = x
        accepted = [ids for ids in ids_of if not isinstance(ids, ApiError)]
        self.metrics.batch_requests.observe(len(accepted))
        self.metrics.batch_inputs.observe(sum(len(ids) for ids in accepted))
        vectors = enc.encode_token_ids([x for ids in accepted for x in ids]) if accepted else None
        out: list[Embedded | ApiError] = []
        start = 0
        for request, ids in zip(batch, ids_of):
            if isinstance(ids, ApiError):
                out.append(ids)
                continue
            assert vectors is not None
            out.append(Embedded(vectors[start:start + len(ids)], sum(len(x) for x in ids)))
            self.metrics.inputs.labels(request.input_type).inc(len(ids))
            start += len(ids)
        return out
