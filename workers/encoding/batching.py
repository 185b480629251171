"""Token-budget dynamic batching, oldest first: pure, clock passed in, no threads, no sleeping.

Items are taken in arrival order, a window at a time: the oldest pending items whose tokens add
up to `window_batches` budgets (`window_batches` x `max_batch_tokens`, and at most as many times
`max_batch_size` items). Inside a window, items are grouped by length: batches are cut from the
longest down; a batch's cost is its padded token count, longest length x count, and a batch stops
growing where the next item would push its padding past `max_padding` (a share of its real
tokens), so items of very different lengths are never batched together. A batch is released when

- its cost reaches `max_batch_tokens` (one more item would go over the budget), or
- it holds `max_batch_size` items, or
- it holds the oldest pending item, and that item has waited `max_wait_ms` (its neighbours of
  other lengths stay, to fill up with later items; the next oldest is looked at the same way), or
- the caller flushes (end of input, drain before shutdown).

Length grouping never reaches past the window and the oldest item's batch goes first once it is
due, so an item waits behind a bounded number of batches, however many younger items pend (TEI's queue is first in, first out under a token
budget, for the same reason): the head of every partition is encoded within a bounded time. The
padding that remains is counted (`padded_tokens` / `real_tokens`); `bench/batching.py` measures
what the window costs in padding. Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from workers.errors import EncoderConfigError


@dataclass
class Batch:
    """Items released together, longest first. `padded_len` is the length every row is padded to."""

    items: list[Any]
    lengths: list[int]
    padded_len: int
    enqueued_at: list[float] = field(default_factory=list)

    @property
    def padded_tokens(self) -> int:
        return self.padded_len * len(self.items)

    @property
    def real_tokens(self) -> int:
        return sum(self.lengths)


class TokenBudgetBatcher:
    """Groups items by length, inside an age window, into batches under a padded-token budget."""

    def __init__(self, max_batch_tokens: int = 16384, max_batch_size: int = 256,
                 max_wait_ms: float = 20.0, pad_to_multiple_of: int = 1, max_padding: float = 0.1,
                 window_batches: int = 8):
        if max_batch_tokens <= 0 or max_batch_size <= 0 or max_wait_ms < 0 or pad_to_multiple_of <= 0 \
                or max_padding < 0 or window_batches < 1:
            raise EncoderConfigError(
                "batching: max_batch_tokens and max_batch_size must be > 0, max_wait_ms >= 0, "
                f"pad_to_multiple_of > 0, max_padding >= 0, window_batches >= 1; got {max_batch_tokens}, "
                f"{max_batch_size}, {max_wait_ms}, {pad_to_multiple_of}, {max_padding}, {window_batches}")
        self.max_padding = max_padding
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.multiple = pad_to_multiple_of
        self.window_tokens = window_batches * max_batch_tokens
        self.window_items = window_batches * max_batch_size
        self._entries: dict[int, tuple[Any, int, float]] = {}  # seq -> (item, length, enqueued_at)
        self._order: deque[int] = deque()  # seqs in arrival order (released ones dropped lazily)
        self._seq = itertools.count()
        self.real_tokens = 0
        self.padded_tokens = 0
        self.batches_released = 0

    def __len__(self) -> int:
        return len(self._entries)

    def padded(self, length: int) -> int:
        return -(-length // self.multiple) * self.multiple

    def add(self, item: Any, length: int, now: float) -> None:
        """Queue one item of `length` tokens; called as tokenized items arrive."""
        seq = next(self._seq)
        self._entries[seq] = (item, length, now)
        self._order.append(seq)

    def oldest_wait(self, now: float) -> float:
        self._drop_released()
        return now - self._entries[self._order[0]][2] if self._order else 0.0

    def next_deadline(self) -> float | None:
        """When the oldest pending item reaches max_wait (None if nothing pends)."""
        self._drop_released()
        return self._entries[self._order[0]][2] + self.max_wait_s if self._order else None

    def pop_ready(self, now: float, flush: bool = False) -> list[Batch]:
        """Release every full batch of the oldest window; once the oldest item waited max_wait,
        also the batch that holds it (its shorter or longer neighbours stay, to fill up with
        later items); with `flush`, everything. Window after window, while any is released."""
        batches: list[Batch] = []
        while self._entries:
            expired = flush or self.oldest_wait(now) >= self.max_wait_s
            released = self._release_window(self._window(), expired, flush)
            batches.extend(released)
            if not released:
                break
        return batches

    def _window(self) -> list[tuple[int, int]]:
        """The oldest pending items, (length, -seq) sorted by length (equal lengths: the earliest
        last, so that it is taken first), within the window's tokens and items; at least one."""
        self._drop_released()
        keys: list[tuple[int, int]] = []
        tokens = 0
        for seq in self._order:
            entry = self._entries.get(seq)
            if entry is None:
                continue
            length = entry[1]
            if keys and (tokens + length > self.window_tokens or len(keys) >= self.window_items):
                break
            keys.append((length, -seq))
            tokens += length
        keys.sort()
        return keys

    def _release_window(self, keys: list[tuple[int, int]], expired: bool, flush: bool) -> list[Batch]:
        oldest = -self._order[0] if expired else None  # the key part of the oldest item
        batches = []
        top = len(keys)  # batches are cut from keys[:top], longest (end) first
        while top > 0:
            take, full = self._cut(keys, top)
            cut = keys[top - take:top]
            if full or flush or (oldest is not None and any(k[1] == oldest for k in cut)):
                batches.append(self._release(cut))
            top -= take
        return batches

    def _cut(self, keys: list[tuple[int, int]], top: int) -> tuple[int, bool]:
        """How many of the longest items below index `top` form the next batch, and whether
        that batch is full (budget or size reached). At least one item: an item over the
        budget goes alone."""
        longest = self.padded(keys[top - 1][0])
        by_budget = max(1, self.max_batch_tokens // longest)
        limit = min(top, self.max_batch_size, by_budget)
        take, real = 1, keys[top - 1][0]
        while take < limit:
            length = keys[top - 1 - take][0]
            if longest * (take + 1) > (1.0 + self.max_padding) * (real + length):
                return take, False  # the next item is much shorter: this batch cannot grow
            take += 1
            real += length
        return take, take == self.max_batch_size or take == by_budget

    def _release(self, keys: list[tuple[int, int]]) -> Batch:
        items, lengths, times = [], [], []
        for length, neg_seq in reversed(keys):  # longest first
            item, _, enqueued = self._entries.pop(-neg_seq)
            items.append(item)
            lengths.append(length)
            times.append(enqueued)
        batch = Batch(items=items, lengths=lengths, padded_len=self.padded(lengths[0]), enqueued_at=times)
        self.real_tokens += batch.real_tokens
        self.padded_tokens += batch.padded_tokens
        self.batches_released += 1
        return batch

    def _drop_released(self) -> None:
        order = self._order
        while order and order[0] not in self._entries:
            order.popleft()
        if len(order) > 2 * len(self._entries) + 64:
            self._order = deque(s for s in order if s in self._entries)

    @property
    def padding_overhead(self) -> float:
        """Padded tokens computed per real token, minus one (0.0 = no padding)."""
        return self.padded_tokens / self.real_tokens - 1.0 if self.real_tokens else 0.0
