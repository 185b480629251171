"""Token-budget dynamic batching: pure, clock passed in, no threads, no sleeping.

Pending items are kept sorted by length. Batches are cut from the longest pending items down;
a batch's cost is its padded token count, longest length x count, and a batch stops growing
where the next item would push its padding past `max_padding` (a share of its real tokens), so
items of very different lengths are never batched together. A batch is released when

- its cost reaches `max_batch_tokens` (one more item would go over the budget), or
- it holds `max_batch_size` items, or
- the oldest pending item has waited `max_wait_ms` (then everything pending is released), or
- the caller flushes (end of input, drain before shutdown).

Items of similar length end up together, so little compute is spent on padding; the padding
that remains is counted (`padded_tokens` / `real_tokens`). Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import bisect
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
    """Groups items by length into batches under a padded-token budget."""

    def __init__(self, max_batch_tokens: int = 16384, max_batch_size: int = 256,
                 max_wait_ms: float = 20.0, pad_to_multiple_of: int = 1, max_padding: float = 0.1):
        if max_batch_tokens <= 0 or max_batch_size <= 0 or max_wait_ms < 0 or pad_to_multiple_of <= 0 \
                or max_padding < 0:
            raise EncoderConfigError(
                "batching: max_batch_tokens and max_batch_size must be > 0, max_wait_ms >= 0, "
                f"pad_to_multiple_of > 0, max_padding >= 0; got {max_batch_tokens}, {max_batch_size}, "
                f"{max_wait_ms}, {pad_to_multiple_of}, {max_padding}")
        self.max_padding = max_padding
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.multiple = pad_to_multiple_of
        # Sorted by (length, -arrival): batches are cut from the end (the longest), and among
        # equal lengths the earliest arrival sits last, so it is taken first.
        self._keys: list[tuple[int, int]] = []
        self._entries: dict[int, tuple[Any, int, float]] = {}
        self._seq = itertools.count()
        self._oldest: deque[tuple[float, int]] = deque()  # (enqueued_at, seq), arrival order
        self.real_tokens = 0
        self.padded_tokens = 0
        self.batches_released = 0

    def __len__(self) -> int:
        return len(self._keys)

    def padded(self, length: int) -> int:
        return -(-length // self.multiple) * self.multiple

    def add(self, item: Any, length: int, now: float) -> None:
        """Queue one item of `length` tokens; called as tokenized items arrive."""
        seq = next(self._seq)
        bisect.insort(self._keys, (length, -seq))
        self._entries[seq] = (item, length, now)
        self._oldest.append((now, seq))

    def oldest_wait(self, now: float) -> float:
        self._drop_released_from_oldest()
        return now - self._oldest[0][0] if self._oldest else 0.0

    def next_deadline(self) -> float | None:
        """When the oldest pending item reaches max_wait (None if nothing pends)."""
        self._drop_released_from_oldest()
        return self._oldest[0][0] + self.max_wait_s if self._oldest else None

    def pop_ready(self, now: float, flush: bool = False) -> list[Batch]:
        """Release every batch that is full; everything if the oldest waited max_wait or `flush`."""
        release_all = flush or (bool(self._keys) and self.oldest_wait(now) >= self.max_wait_s)
        batches = []
        top = len(self._keys)  # batches are cut from self._keys[:top], longest (end) first
        while top > 0:
            take, full = self._cut(top)
            if full or release_all:
                batches.append(self._release(top - take, top))
            top -= take
        return batches

    def _cut(self, top: int) -> tuple[int, bool]:
        """How many of the longest items below index `top` form the next batch, and whether
        that batch is full (budget or size reached). At least one item: an item over the
        budget goes alone."""
        keys = self._keys
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

    def _release(self, start: int, stop: int) -> Batch:
        keys = self._keys[start:stop]
        del self._keys[start:stop]
        keys.reverse()  # longest first
        items, lengths, times = [], [], []
        for length, neg_seq in keys:
            item, _, enqueued = self._entries.pop(-neg_seq)
            items.append(item)
            lengths.append(length)
            times.append(enqueued)
        batch = Batch(items=items, lengths=lengths, padded_len=self.padded(lengths[0]), enqueued_at=times)
        self.real_tokens += batch.real_tokens
        self.padded_tokens += batch.padded_tokens
        self.batches_released += 1
        return batch

    def _drop_released_from_oldest(self) -> None:
        oldest = self._oldest
        while oldest and oldest[0][1] not in self._entries:
            oldest.popleft()
        if len(oldest) > 4 * len(self._entries) + 64:
            self._oldest = deque(x for x in oldest if x[1] in self._entries)

    @property
    def padding_overhead(self) -> float:
        """Padded tokens computed per real token, minus one (0.0 = no padding)."""
        return self.padded_tokens / self.real_tokens - 1.0 if self.real_tokens else 0.0
