"""Retention on the local Redis Cluster: 6 shards spread over 3 masters, each with its times set
in its own slot (one pipeline, one Lua script per shard), and the sweep removes exactly what aged
out, from every master."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from redis.cluster import RedisCluster

from pipelines.config import load_settings
from pipelines.maintenance.retention_sweep import RetentionSweeper
from workers.sinks.base import SinkRecord
from workers.sinks.redis_vset import RedisVectorSetSink
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def test_the_sweep_on_six_shards_over_three_masters(local_cluster, unique):
    settings = load_settings(None, {"redis": {"url": "redis://127.0.0.1:17000", "cluster": True, "shards": 6,
                                              "key_prefix": f"ret{unique}", "retention": "1d", "quantization": "noquant"},
                                    "model": {"name": "tiny"}})
    now = datetime.now(UTC)
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((300, 8)).astype(np.float32)
    ages = {f"d{i}": (2 if i % 3 == 0 else 20 if i % 3 == 1 else 30) for i in range(300)}  # hours
    records = [SinkRecord(id=doc_id, op="upsert", topic="t", partition=0, offset=i, vector=v / np.linalg.norm(v),
                          published_at=now - timedelta(hours=ages[doc_id]))
               for i, ((doc_id, _), v) in enumerate(zip(ages.items(), vectors))]
    sink = RedisVectorSetSink(settings.redis, "tiny", "tiny", 8)
    sink.setup()
    try:
        sink.write(records)
    finally:
        sink.close()
    assert sink.too_old == 100  # 30 h old: not indexed
    client = RedisCluster(host="127.0.0.1", port=17000)
    index = VectorSetIndex.stored(client, settings.redis, "tiny")
    masters = {client.get_node_from_key(k).port for k in index.shard_keys()}
    assert len(masters) == 3 and all(client.keyslot(VectorSetIndex.times_key(k)) == client.keyslot(k)
                                     for k in index.shard_keys())
    result = RetentionSweeper(settings).tick(now=time.time() + 5 * 3600)  # the 20 h old ones age out
    assert result["expired"] == 100 and "error" not in result
    kept = {doc_id for doc_id, age in ages.items() if age == 2}
    present = {doc_id for doc_id in ages if client.execute_command("VISMEMBER", index.key_for(doc_id), doc_id)}
    assert present == kept
    assert sum(client.zcard(VectorSetIndex.times_key(k)) for k in index.shard_keys()) == len(kept)
