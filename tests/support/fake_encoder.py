"""A clock the simulation advances, and an encoder that costs simulated time instead of CPU.

`SimClock` is the `Clock` of workers/stream/threads.py with a settable `now`. `FakeEncoder` has
the interface the encode stage uses (submit_tokenize, new_batcher, launch, collect): tokens are
made from the text's length, vectors from its ids, and each launched batch adds its simulated
forward time to `cost` (seconds per padded token), which the simulation reads with
`take_cost()` to keep the encode thread busy that long. It is asynchronous, as a GPU is: a batch
is collected by the next step, so its documents reach the ledger when the forward is done.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import torch

from workers.encoding.batching import TokenBudgetBatcher
from workers.encoding.tokenizing import TokenizedTexts
from workers.stream.threads import Clock

EPOCH = 1_767_225_600.0  # wall time at simulated second 0 (2026-01-01)


class SimClock(Clock):
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return EPOCH + self.now


class FakeEncoder:
    dim = 4
    revision = None
    model_id = "sim-model"
    dtype = "fp32"
    asynchronous = True
    device = torch.device("cpu")

    def __init__(self, seconds_per_token: float = 0.0005, max_batch_tokens: int = 512, max_batch_size: int = 16):
        self.seconds_per_token = seconds_per_token
        self.max_batch_tokens, self.max_batch_size = max_batch_tokens, max_batch_size
        self.cost = 0.0
        self.slowdown = 1.0          # the simulation's fault: a slower device
        self.fail_next = False       # the simulation's fault: the forward raises
        self.closed = False

    def submit_tokenize(self, texts: list[str]) -> Future:
        future: Future = Future()
        ids = [[7 + (ord(c) % 50) for c in text[: max(1, min(64, len(text) // 4))]] for text in texts]
        future.set_result(TokenizedTexts(ids=ids, doc=list(range(len(texts))), chunk=[0] * len(texts)))
        return future

    def new_batcher(self, max_wait_ms: float = 0.0, max_padding: float = 0.1, window_batches: int = 8):
        return TokenBudgetBatcher(self.max_batch_tokens, self.max_batch_size, max_wait_ms, max_padding=max_padding,
                                  window_batches=window_batches)

    def launch(self, ids: list[list[int]], padded_len: int):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")
        self.cost += self.seconds_per_token * padded_len * len(ids) * self.slowdown
        vectors = np.zeros((len(ids), self.dim), dtype=np.float32)
        vectors[:, 0] = 1.0
        vectors[:, 1] = [len(x) for x in ids]
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    @staticmethod
    def collect(handle) -> np.ndarray:
        return handle

    def take_cost(self) -> float:
        cost, self.cost = self.cost, 0.0
        return cost

    def close(self) -> None:
        self.closed = True
