"""`redis.retention` against a real Redis and broker: documents older than the retention on
arrival are not indexed (counted; the lake has them), upserts and deletes across the cut keep the
times set right, and the sweep — run while the stream goes on — removes exactly what aged out,
from the vector sets and from search, on 3 shards."""

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from pipelines.maintenance.retention_sweep import RetentionSweeper
from pipelines.ops.status import redis_status
from tests.helpers import WorkerThread, all_committed, create_topic, make_settings, produce, read_parquet, wait_until
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def news(doc_id: str, hours_ago: float | None, text: str | None = None, op: str | None = None):
    body = {"id": doc_id, "text": text or f"news {doc_id} 속보 금리 발표"}
    if hours_ago is not None:
        body["published_at"] = (NOW - timedelta(hours=hours_ago)).isoformat()
    if op:
        body = {"id": doc_id, "op": op}
    return doc_id.encode(), json.dumps(body, ensure_ascii=False).encode()


def stream(settings, records) -> WorkerThread:
    produce(settings, records)
    worker = WorkerThread(settings).start()
    wait_until(lambda: all_committed(settings), timeout=120, message="everything committed")
    return worker


def indexed(client, index: VectorSetIndex, ids) -> set[str]:
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.execute_command("VISMEMBER", index.key_for(i), i)
    return {i for i, present in zip(ids, pipe.execute()) if present}


def test_retention_on_arrival_across_upserts_and_deletes_and_by_the_sweep(kafka_bootstrap, redis_url, tiny_model_dir,
                                                                          tmp_path, unique, redis_client):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             redis={"retention": "1d", "shards": 3})
    create_topic(settings, partitions=3)
    new = [f"new{i}" for i in range(10)]    # 1 h old
    mid = [f"mid{i}" for i in range(10)]    # 20 h old: kept now, aged out 5 h from now
    old = [f"old{i}" for i in range(5)]     # 30 h old on arrival: never indexed
    undated = [f"undated{i}" for i in range(3)]  # the ingestion time counts
    worker = stream(settings, [news(i, 1) for i in new] + [news(i, 20) for i in mid] + [news(i, 30) for i in old]
                    + [news(i, None) for i in undated])
    assert worker.worker.stats()["too_old"] == 5
    worker.stop()
    index = VectorSetIndex.stored(redis_client, settings.redis, "tiny-bert")
    everything = new + mid + old + undated
    assert indexed(redis_client, index, everything) == set(new + mid + undated)

    # across the cut: mid0 re-published now (moves), new0 re-published 30 h old (goes), deletes
    stream(settings, [news("mid0", 1, "updated"), news("new0", 30, "backdated"), news("new1", None, op="delete"),
                      news("mid1", None, op="delete")]).stop()
    kept = set(new + mid + undated) - {"new0", "new1", "mid1"}
    assert indexed(redis_client, index, everything) == kept
    times = [VectorSetIndex.times_key(k) for k in index.shard_keys()]
    assert sum(redis_client.zcard(t) for t in times) == len(kept) == sum(
        redis_client.execute_command("VCARD", k) for k in index.shard_keys())

    # the sweep as it will run 5 h from now, while the stream goes on
    live = [f"live{i}" for i in range(40)]
    registry = CollectorRegistry()
    sweeper = RetentionSweeper(settings, registry)
    worker = WorkerThread(settings).start()
    swept: dict = {}
    sweeping = threading.Thread(target=lambda: swept.update(sweeper.tick(now=NOW.timestamp() + 5 * 3600)))
    sweeping.start()
    produce(settings, [news(i, 0) for i in live])
    sweeping.join(60)
    wait_until(lambda: all_committed(settings), timeout=120, message="the live documents committed")
    worker.stop()
    aged = {f"mid{i}" for i in range(2, 10)}
    assert swept["expired"] == len(aged) and "error" not in swept
    assert registry.get_sample_value("embedworker_vectors_expired_total", {"index": "tiny-bert"}) == len(aged)
    assert indexed(redis_client, index, everything + live) == (kept - aged) | set(live)
    assert sweeper.tick(now=NOW.timestamp() + 5 * 3600)["expired"] == 0, "a second sweep finds nothing"

    # search never returns what was swept; the lake keeps everything; status shows the span
    hits = set()
    for key in index.shard_keys():
        anchor = redis_client.execute_command("VRANDMEMBER", key)
        hits |= {h.decode() for h in redis_client.execute_command("VSIM", key, "ELE", anchor, "COUNT", 1000, "EF", 1000)}
    assert hits == (kept - aged) | set(live)
    lake = set(read_parquet(settings)["id"].to_pylist())
    assert lake >= set(everything) | set(live)
    status = redis_status(settings)
    assert status["retention"] == "1d" and status["oldest"] <= status["newest"]
    assert status["oldest"] >= NOW.timestamp() - 2 * 3600 - 60  # the 20 h old ones are gone
