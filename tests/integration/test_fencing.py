"""Fenced Redis writes against a real Redis 8: a replica that lost a partition and writes its
records late (frozen, then thawed, before it learns of the loss) never overwrites what the
partition's new owner wrote, deletions included; another source is never compared."""

import json

import numpy as np
import pytest

from workers.settings import RedisSettings
from workers.sinks.base import SinkRecord
from workers.sinks.fenced_writes import sources_key
from workers.sinks.redis_vset import RedisVectorSetSink
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration
DIM = 8


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def rec(doc_id: str, offset: int, seed: int | None = None, op: str = "upsert", partition: int = 0, topic: str = "t",
        **kw) -> SinkRecord:
    return SinkRecord(id=doc_id, op=op, topic=topic, partition=partition, offset=offset,
                      vector=None if op == "delete" else vec(offset if seed is None else seed),
                      title=f"v{offset}", **kw)


@pytest.fixture
def sinks(redis_url, unique):
    settings = RedisSettings(url=redis_url, key_prefix=f"fence{unique}", shards=2)
    made = []

    def new() -> RedisVectorSetSink:
        sink = RedisVectorSetSink(settings, "m", "m", DIM)
        sink.setup()
        made.append(sink)
        return sink

    yield new
    for sink in made:
        sink.close()


def title_of(redis_client, sink: RedisVectorSetSink, element: str) -> str | None:
    key = sink.index.shard_keys()[sink.index.shard_of(element.split("#")[0])]
    raw = redis_client.execute_command("VGETATTR", key, element)
    return None if raw is None else json.loads(raw)["title"]


def test_a_late_write_of_an_older_record_is_refused(sinks, redis_client):
    old_owner, new_owner = sinks(), sinks()
    new_owner.write([rec("a", 20), rec("b", 21)])
    old_owner.write([rec("a", 10), rec("b", 11), rec("c", 12)])  # thawed: a and b are stale, c is not
    assert title_of(redis_client, new_owner, "a") == "v20"
    assert title_of(redis_client, new_owner, "b") == "v21"
    assert title_of(redis_client, new_owner, "c") == "v12"  # not written by the new owner yet: taken
    assert old_owner.stale == 2 and new_owner.stale == 0
    # the same record again (a retry after a cut pipeline) is applied: writes stay idempotent
    new_owner.write([rec("a", 20, seed=99)])
    assert title_of(redis_client, new_owner, "a") == "v20" and new_owner.stale == 0


def test_a_deletion_is_a_tombstone_a_stale_upsert_cannot_bring_back(sinks, redis_client):
    old_owner, new_owner = sinks(), sinks()
    new_owner.write([rec("a", 5), rec("a", 30, op="delete")])
    old_owner.write([rec("a", 7)])
    assert title_of(redis_client, new_owner, "a") is None
    key = new_owner.index.shard_keys()[new_owner.index.shard_of("a")]
    ttl = redis_client.execute_command("HTTL", sources_key(key), "FIELDS", 1, "a")[0]
    assert 0 < ttl <= 7 * 86400
    # a newer upsert brings it back and clears the tombstone's expiry
    new_owner.write([rec("a", 31)])
    assert title_of(redis_client, new_owner, "a") == "v31"
    assert redis_client.execute_command("HTTL", sources_key(key), "FIELDS", 1, "a")[0] == -1


def test_other_partitions_and_sources_are_not_compared(sinks, redis_client):
    sink = sinks()
    sink.write([rec("a", 100, partition=0)])
    sink.write([rec("a", 3, partition=1)])            # the topic grew partitions: the id moved
    assert title_of(redis_client, sink, "a") == "v3"
    sink.write([rec("a", 1, topic="backfill/file.jsonl")])  # a backfill of files: last write wins
    assert title_of(redis_client, sink, "a") == "v1" and sink.stale == 0


def test_a_shorter_document_loses_its_old_chunks_before_chunk_zero_is_rewritten(sinks, redis_client):
    sink = sinks()
    chunked = {"chunked": True}
    sink.write([rec("d", 1, chunk=k, chunks=4, **chunked) for k in range(4)])
    ops, _ = sink._element_ops(sink._clients[0], sink.index.shard_keys()[sink.index.shard_of("d")],
                                [rec("d", 2, chunk=k, chunks=2, **chunked) for k in range(2)])
    assert [(op.add, op.element) for op in ops] == [(False, "d#2"), (False, "d#3"), (True, "d#0"), (True, "d#1")]
    sink.write([rec("d", 2, chunk=k, chunks=2, **chunked) for k in range(2)])
    assert [title_of(redis_client, sink, f"d#{k}") for k in range(4)] == ["v2", "v2", None, None]
    # the old owner's late write of the longer version brings no chunk back
    stale = sinks()
    stale.write([rec("d", 1, chunk=k, chunks=4, **chunked) for k in range(4)])
    assert [title_of(redis_client, sink, f"d#{k}") for k in range(4)] == ["v2", "v2", None, None]
    assert stale.stale == 4


def test_a_server_that_lost_the_script_gets_it_again(sinks, redis_client):
    sink = sinks()
    sink.write([rec("a", 1)])
    redis_client.script_flush()
    sink.write([rec("a", 2)])
    assert title_of(redis_client, sink, "a") == "v2"


def test_the_sources_live_beside_each_shard_in_its_slot():
    for key in ("news:m:0", "news:m:{0-7}"):
        from redis.crc import key_slot

        assert key_slot(sources_key(key).encode()) == key_slot(key.encode())
        assert key_slot(VectorSetIndex.times_key(key).encode()) == key_slot(key.encode())
