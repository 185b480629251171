"""Shard key names: the plain layout keeps the names indexes always had; the slots layout (new
indexes on Redis Cluster) spreads S shards evenly over masters with equal slot ranges, with names
that depend on S alone; an index keeps the layout its meta hash recorded. A search that names no
EF uses redis.search_ef (inserts use redis.ef)."""

from __future__ import annotations

import numpy as np
import pytest
from redis.crc import key_slot

from workers.settings import RedisSettings
from workers.sinks.vector_sets import VectorSetIndex

SLOTS = 16384


def masters_of(keys: list[str], masters: int) -> list[int]:
    """Which of `masters` equal slot ranges (as `redis-cli --cluster create` and
    infra/local/redis_cluster.py assign them) holds each key."""
    ranges = [(i * SLOTS // masters, (i + 1) * SLOTS // masters - 1) for i in range(masters)]
    return [next(m for m, (lo, hi) in enumerate(ranges) if lo <= key_slot(k.encode()) <= hi) for k in keys]


def test_plain_names_are_the_ones_indexes_always_had():
    assert VectorSetIndex("news", "koen", 1).shard_keys() == ["news:koen"]
    assert VectorSetIndex("news", "koen", 3).shard_keys() == ["news:koen:0", "news:koen:1", "news:koen:2"]
    assert VectorSetIndex("news", "koen", 1, "slots").shard_keys() == ["news:koen"]


def test_slot_names_are_fixed_by_the_shard_count_alone():
    # Changing how the tags are chosen would orphan every index written on a cluster: pinned.
    assert VectorSetIndex("news", "koen", 6, "slots").shard_keys() == [
        "news:koen:{0-0}", "news:koen:{1-11}", "news:koen:{2-3}", "news:koen:{3-11}", "news:koen:{4-3}", "news:koen:{5-1}"]
    assert VectorSetIndex("other", "x", 6, "slots").shard_keys()[1] == "other:x:{1-11}"


@pytest.mark.parametrize("masters", [2, 3, 4, 5, 6])
@pytest.mark.parametrize("per_master", [1, 2, 3, 4])
def test_slot_names_spread_shards_evenly_over_masters(masters, per_master):
    shards = masters * per_master
    keys = VectorSetIndex("news", "koen", shards, "slots").shard_keys()
    placed = masters_of(keys, masters)
    assert sorted(placed.count(m) for m in range(masters)) == [per_master] * masters
    assert masters_of(VectorSetIndex("news", "koen", shards).shard_keys(), masters) != placed or per_master == 1


def test_documents_pick_the_same_shard_in_both_layouts():
    plain, slots = VectorSetIndex("p", "i", 6), VectorSetIndex("p", "i", 6, "slots")
    for doc_id in ("a", "b", "기사-1", "x" * 300):
        assert plain.shard_of(doc_id) == slots.shard_of(doc_id)
        assert slots.key_for(doc_id) == slots.shard_keys()[slots.shard_of(doc_id)]


def test_the_layout_comes_from_the_meta_hash_and_new_cluster_indexes_get_slots():
    cluster, single = RedisSettings(cluster=True, shards=6), RedisSettings(shards=6)
    assert VectorSetIndex.from_meta(cluster, "i", {}).layout == "slots"
    assert VectorSetIndex.from_meta(single, "i", {}).layout == "plain"
    assert VectorSetIndex.from_meta(RedisSettings(cluster=True), "i", {}).layout == "plain"  # one shard: one key
    written_before = {"shards": "6", "dim": "384"}  # an index from before key_layout existed
    assert VectorSetIndex.from_meta(cluster, "i", written_before).layout == "plain"
    assert VectorSetIndex.from_meta(single, "i", {"shards": "4", "key_layout": "slots"}).shard_keys() == \
        VectorSetIndex("news", "i", 4, "slots").shard_keys()
    with pytest.raises(ValueError, match="unknown key layout"):
        VectorSetIndex.from_meta(single, "i", {"shards": "2", "key_layout": "zigzag"})


def test_a_search_without_its_own_ef_uses_redis_search_ef_not_the_insert_ef():
    from pipelines.config import load_settings
    from pipelines.serving.search import Searcher

    settings = load_settings(None, {"redis": {"ef": 77, "search_ef": 1234}})
    calls: list[tuple] = []

    class Shard:
        def execute_command(self, *args):
            calls.append(args)
            return []

    searcher = Searcher(settings)
    searcher._clients = lambda index: [Shard()]
    index = VectorSetIndex.new(settings.redis, "x")
    searcher.search_vector(np.ones(4, np.float32), index=index)
    searcher.search_vector(np.ones(4, np.float32), ef=50, index=index)
    assert [c[c.index("EF") + 1] for c in calls] == [1234, 50]
