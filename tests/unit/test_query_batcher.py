"""Continuous batching in the query service (`QueryBatcher`), on a fake encoder whose model call
can be held: a lone request goes at once, requests that arrive while a batch runs go together in
the next one, a refused or failed request never takes its neighbours with it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from pipelines.serving.batcher import QueryBatcher
from pipelines.serving.http_contract import ApiError
from pipelines.serving.metrics import ServeMetrics


class FakeTokenizer:
    def tokenize_whole(self, texts, prefix=""):
        return [[1] + [len(w) for w in (prefix + t).split()] + [2] for t in texts]

    def tokenize(self, texts, prefix="", chunked=None):
        class Out:
            ids = [([1] + [len(w) for w in (prefix + t).split()])[:4] + [2] for t in texts]
        return Out()


class FakeEncoder:
    """Vectors that say which text they are ([first id after CLS, token count]); `hold` blocks
    the model call until released, `fail` makes the next call raise."""

    query_prefix, document_prefix, max_tokens, dim = "q: ", "p: ", 5, 2

    def __init__(self):
        self.tokenizer = FakeTokenizer()
        self.calls: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()
        self.fail = False

    def encode_token_ids(self, ids):
        self.calls.append(len(ids))
        self.started.set()
        self.hold.wait(10)
        if self.fail:
            self.fail = False
            raise RuntimeError("CUDA out of memory")
        return np.array([[x[1], len(x)] for x in ids], dtype=np.float32)


def batcher(encoder, wait_ms=0.0):
    return QueryBatcher(encoder, max_batch_size=4, batch_wait_ms=wait_ms, metrics=ServeMetrics())


async def model_busy(b: QueryBatcher, enc: FakeEncoder) -> asyncio.Future:
    """A first request held inside the model call, so that the next ones queue behind it."""
    enc.hold.clear()
    first = asyncio.ensure_future(b.embed(["a"], "query"))
    await asyncio.to_thread(enc.started.wait, 5)
    return first


async def queued(b: QueryBatcher, n: int) -> None:
    """Until `n` requests wait in the batcher's queue (each `embed` call queues at its first step)."""
    for _ in range(1000):
        if len(b._queue) >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(b._queue)} requests queued, expected {n}")


def test_a_lone_request_goes_to_the_model_at_once_and_gets_its_own_vectors():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc)
        out = await asyncio.wait_for(b.embed(["aa bbb", "c"], "passage"), 5)
        assert enc.calls == [2]
        assert out.vectors.tolist() == [[2.0, 5.0], [2.0, 4.0]]  # "p:" then the words; CLS and SEP counted
        assert out.tokens == 9

    asyncio.run(go())


def test_requests_that_arrive_while_a_batch_runs_go_together_in_the_next():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc)
        first = await model_busy(b, enc)
        later = [asyncio.ensure_future(b.embed([f"w{i}"], "query")) for i in range(6)]
        await queued(b, 6)
        enc.hold.set()
        results = await asyncio.wait_for(asyncio.gather(first, *later), 5)
        assert enc.calls == [1, 4, 2]  # the six that waited: a full batch (max 4 requests), then the rest
        assert [r.vectors[0, 1] for r in results] == [4.0] * 7  # each its own text: CLS, "q:", the word, SEP

    asyncio.run(go())


def test_a_text_too_long_is_its_requests_400_and_its_neighbours_are_embedded():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc)
        first = await model_busy(b, enc)
        long_one = asyncio.ensure_future(b.embed(["one two three four"], "query"))
        in_list = asyncio.ensure_future(b.embed(["ok", "one two three four"], "query", single=False))
        cut = asyncio.ensure_future(b.embed(["one two three four"], "query", truncate=True))
        fine = asyncio.ensure_future(b.embed(["fine"], "passage"))
        await queued(b, 4)
        enc.hold.set()
        await asyncio.wait_for(asyncio.gather(first, long_one, in_list, cut, fine, return_exceptions=True), 5)
        assert isinstance(long_one.exception(), ApiError) and long_one.exception().param == "input"
        assert in_list.exception().param == "input[1]"
        assert cut.result().vectors.shape == (1, 2) and cut.result().tokens == 5  # truncated to max_tokens
        assert fine.result().vectors.tolist() == [[2.0, 4.0]]
        assert enc.calls == [1, 2]  # the refused ones never reached the model

    asyncio.run(go())


def test_a_failed_model_call_fails_its_batch_only_and_the_next_batch_is_served():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc)
        enc.fail = True
        with pytest.raises(RuntimeError, match="out of memory"):
            await asyncio.wait_for(b.embed(["a"], "query"), 5)
        assert (await asyncio.wait_for(b.embed(["b"], "query"), 5)).vectors.shape == (1, 2)

    asyncio.run(go())


def test_a_request_its_client_gave_up_on_is_not_embedded():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc)
        first = await model_busy(b, enc)
        gone = asyncio.ensure_future(b.embed(["gone"], "query"))
        kept = asyncio.ensure_future(b.embed(["kept"], "query"))
        await queued(b, 2)
        gone.cancel()
        enc.hold.set()
        await asyncio.wait_for(asyncio.gather(first, kept), 5)
        assert enc.calls == [1, 1]

    asyncio.run(go())


def test_batch_wait_ms_lets_a_small_batch_wait_for_company():
    async def go():
        enc = FakeEncoder()
        b = batcher(enc, wait_ms=200)
        first = asyncio.ensure_future(b.embed(["a"], "query"))
        await queued(b, 1)  # the feeder now waits batch_wait_ms for company
        second = asyncio.ensure_future(b.embed(["b"], "query"))
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert enc.calls == [2]

    asyncio.run(go())
