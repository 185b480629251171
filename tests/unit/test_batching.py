"""TokenBudgetBatcher: each release rule, ordering, padding accounting. No sleeping: time is an argument."""

import random

import pytest

from workers.encoding.batching import TokenBudgetBatcher
from workers.errors import EncoderConfigError


def test_released_when_padded_tokens_reach_the_budget():
    b = TokenBudgetBatcher(max_batch_tokens=1000, max_batch_size=256, max_wait_ms=50)
    for i in range(9):
        b.add(i, 100, now=0.0)
    assert b.pop_ready(now=0.001) == []
    b.add(9, 100, now=0.002)
    [batch] = b.pop_ready(now=0.003)
    assert sorted(batch.items) == list(range(10))
    assert batch.padded_tokens == 1000 and len(b) == 0


def test_one_more_item_over_budget_releases_the_batch_without_it():
    b = TokenBudgetBatcher(max_batch_tokens=1000, max_batch_size=256, max_wait_ms=50, max_padding=1.0)
    for i in range(3):
        b.add(f"long{i}", 300, now=0.0)
    b.add("short", 200, now=0.0)
    [batch] = b.pop_ready(now=0.0)  # 300 x 4 = 1200 > 1000: the three longest go, 900 tokens
    assert batch.items == ["long0", "long1", "long2"] and batch.padded_tokens == 900
    assert len(b) == 1


def test_released_at_max_batch_size():
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=4, max_wait_ms=50)
    for i in range(6):
        b.add(i, 10, now=0.0)
    [batch] = b.pop_ready(now=0.0)
    assert batch.items == [0, 1, 2, 3]
    assert len(b) == 2


def test_released_when_the_oldest_waited_max_wait():
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=100, max_wait_ms=20)
    b.add("a", 10, now=1.000)
    b.add("b", 12, now=1.015)
    assert b.next_deadline() == pytest.approx(1.020)
    assert b.pop_ready(now=1.0199) == []
    [batch] = b.pop_ready(now=1.020)
    assert batch.items == ["b", "a"]
    assert b.next_deadline() is None and len(b) == 0


def test_flush_releases_everything_in_budget_sized_batches():
    b = TokenBudgetBatcher(max_batch_tokens=100, max_batch_size=100, max_wait_ms=10_000)
    for i in range(25):
        b.add(i, 10, now=0.0)
    batches = b.pop_ready(now=0.0)  # two full batches of 10
    assert [len(x.items) for x in batches] == [10, 10]
    rest = b.pop_ready(now=0.0, flush=True)
    assert [len(x.items) for x in rest] == [5]
    assert sorted(i for x in batches + rest for i in x.items) == list(range(25))


def test_an_item_over_the_budget_goes_alone_at_once():
    b = TokenBudgetBatcher(max_batch_tokens=256, max_batch_size=8, max_wait_ms=10_000)
    b.add("small", 5, now=0.0)
    b.add("huge", 512, now=0.0)
    [batch] = b.pop_ready(now=0.0)
    assert batch.items == ["huge"] and batch.padded_len == 512
    assert len(b) == 1


def test_very_different_lengths_are_not_padded_together():
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=100, max_wait_ms=10, max_padding=0.1)
    b.add("article", 500, now=0.0)
    for i in range(5):
        b.add(f"title{i}", 20 + i, now=0.0)
    batches = b.pop_ready(now=0.0, flush=True)
    assert [x.items for x in batches] == [["article"], ["title4", "title3", "title2", "title1", "title0"]]
    assert b.padding_overhead == pytest.approx((24 * 5 - sum(range(20, 25))) / (500 + sum(range(20, 25))))


def test_full_short_batch_is_released_while_a_lonely_long_item_waits():
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=4, max_wait_ms=10, max_padding=0.1)
    b.add("article", 500, now=0.0)
    for i in range(4):
        b.add(f"t{i}", 20, now=0.0)
    [batch] = b.pop_ready(now=0.001)
    assert batch.items == ["t0", "t1", "t2", "t3"]
    assert len(b) == 1
    [late] = b.pop_ready(now=0.010)
    assert late.items == ["article"]


def test_batches_are_longest_first_and_equal_lengths_keep_arrival_order():
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=100, max_wait_ms=0, max_padding=10)
    for i, length in enumerate([5, 9, 5, 7, 9, 5]):
        b.add(i, length, now=0.0)
    [batch] = b.pop_ready(now=0.0)
    assert batch.items == [1, 4, 3, 0, 2, 5]
    assert batch.lengths == [9, 9, 7, 5, 5, 5]


def test_every_item_is_released_exactly_once_and_within_the_limits():
    rng = random.Random(3)
    b = TokenBudgetBatcher(max_batch_tokens=2048, max_batch_size=32, max_wait_ms=5, pad_to_multiple_of=8)
    released, now = [], 0.0
    for i in range(3000):
        now += rng.random() * 0.0005
        b.add(i, rng.choice([rng.randint(3, 40), rng.randint(100, 512)]), now=now)
        for batch in b.pop_ready(now=now):
            assert len(batch.items) <= 32
            assert batch.padded_tokens <= 2048 or len(batch.items) == 1
            assert batch.padded_len % 8 == 0 and batch.padded_len >= max(batch.lengths)
            assert batch.lengths == sorted(batch.lengths, reverse=True)
            released.extend(batch.items)
    released.extend(i for batch in b.pop_ready(now=now, flush=True) for i in batch.items)
    assert sorted(released) == list(range(3000))
    assert 0 <= b.padding_overhead < 0.25


def test_invalid_settings_are_rejected():
    with pytest.raises(EncoderConfigError, match="max_batch_tokens"):
        TokenBudgetBatcher(max_batch_tokens=0)


def backlog(n: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.choice([rng.randint(8, 60), rng.randint(100, 512)]) for _ in range(n)]


def test_a_backlog_is_cut_oldest_first_the_head_goes_in_the_first_batches():
    """3,000 documents pending at once (a replica that polled a backlog): the oldest is in the
    first batch released, and every document is released within the batches of the windows
    before it, never behind the whole backlog (before: longest first over everything, so short
    documents at the head of a partition waited for every longer one)."""
    lens = backlog(3000)
    b = TokenBudgetBatcher(max_batch_tokens=4096, max_batch_size=64, max_wait_ms=20, window_batches=2)
    for i, n in enumerate(lens):
        b.add(i, n, now=0.0)
    batches = b.pop_ready(now=1.0)
    position = {i: k for k, batch in enumerate(batches) for i in batch.items}
    assert sorted(position) == list(range(3000))
    assert position[0] == 0
    # what is released first is old: the first 10 % of batches hold no document of the last half
    early = [i for batch in batches[:len(batches) // 10] for i in batch.items]
    assert max(early) < 1500
    # and no document waits behind more than a bounded share of the backlog
    assert max(position[i] - i * len(batches) // 3000 for i in range(3000)) < len(batches) // 3


def test_without_the_window_the_head_would_wait_behind_the_whole_backlog():
    """The test above can fail: with the window as wide as the backlog (the old behaviour) the
    oldest, a short document, comes out near the end."""
    lens = [40] + backlog(2999)
    b = TokenBudgetBatcher(max_batch_tokens=4096, max_batch_size=64, max_wait_ms=20, window_batches=10**6)
    for i, n in enumerate(lens):
        b.add(i, n, now=0.0)
    batches = b.pop_ready(now=1.0)
    assert next(k for k, batch in enumerate(batches) if 0 in batch.items) > len(batches) // 2


def test_an_item_of_an_odd_length_is_not_starved_by_younger_full_batches():
    """A lone long item amid short ones: younger full batches of short items go first, but once
    the long one is the oldest and due, its batch goes, alone if need be."""
    b = TokenBudgetBatcher(max_batch_tokens=10**6, max_batch_size=4, max_wait_ms=10, window_batches=3)
    b.add("long", 500, now=0.0)
    for i in range(8):
        b.add(f"s{i}", 20, now=0.001)
    first = b.pop_ready(now=0.002)
    assert [x.items for x in first] == [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]]
    assert b.pop_ready(now=0.009) == []
    [late] = b.pop_ready(now=0.010)
    assert late.items == ["long"]
