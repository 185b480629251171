"""The pipeline on the local scale-out cluster (3 Kafka brokers, a Redis Cluster of 3 masters and
3 replicas, 2 Ray nodes with one GPU each), through failures one at a time: a broker killed -9,
a Redis master killed -9 (its replica takes over), the second Ray node stopped. After each,
every document is once in Redis and once in Parquet, and the offsets are committed to the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from redis.cluster import RedisCluster

from pipelines.config import load_settings
from pipelines.stream.supervisor import StreamSupervisor
from tests.cluster.conftest import REPO, cluster, master_of, promoted
from tests.helpers import all_committed, committed_offsets, end_offsets, read_parquet, wait_until
from tests.reliability.conftest import Stream, run_in_thread
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def cluster_settings(tiny_model_dir, tmp_path, unique, **overrides):
    config = load_settings(REPO / "configs" / "cluster.yaml")
    data = config.model_dump(mode="json")
    # the lake on the cluster's S3-compatible server, under a prefix of this test's own
    data["parquet"]["s3"]["secret_access_key"] = config.parquet.s3.secret_access_key.get_secret_value()
    data["kafka"].update(topic=f"t-{unique}", group_id=f"g-{unique}", commit_interval_ms=200,
                         session_timeout_ms=6000, metadata_max_age_ms=3000)
    data["model"] = {"name": str(tiny_model_dir), "device": "cpu"}
    data["redis"].update(key_prefix=f"test{unique}", quantization="noquant")
    data["parquet"].update(path=f"{config.parquet.path}/test-{unique}", max_seconds=0.5)
    data["workers"].update(metrics_port=None, drain_timeout_s=30)
    data["logging"] = {"summary_interval_s": 5}
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return load_settings(None, data)


def supervised(settings):
    """Replicas started and supervised in a thread (which re-runs a replica Ray restarted)."""
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    thread, box = run_in_thread(lambda: supervisor.supervise(poll_s=0.5))
    return supervisor, thread, box


def test_broker_loss_and_redis_failover_lose_nothing(local_cluster, tiny_model_dir, tmp_path, unique):
    settings = cluster_settings(tiny_model_dir, tmp_path, unique)
    rc = RedisCluster(host="127.0.0.1", port=17000)
    stream = Stream(settings, 3000, n_bad=6, seed=11, partitions=6)
    supervisor, thread, box = supervised(settings)
    try:
        stream.send(1000)
        wait_until(lambda: stream.committed() > 300, timeout=120, message="progress on the cluster")
        cluster("kafka-kill", "2")                       # (a) a broker killed -9
        stream.send(1000)
        wait_until(lambda: stream.committed() >= 1900, timeout=180, message="progress without broker 2",
                   diagnose=lambda: f"committed {committed_offsets(settings)}, end {end_offsets(settings)}")
        cluster("kafka-start", "2")
        key = VectorSetIndex.stored(rc, settings.redis, "tiny-bert").key_for(next(iter(stream.valid)))
        victim = master_of(rc, key)
        cluster("redis-kill", str(victim))               # (b) a Redis master killed -9, its replica takes over
        stream.send()
        other = RedisCluster(host="127.0.0.1", port=17001 if victim == 17000 else 17000)
        wait_until(lambda: promoted(other, key, victim), timeout=60, message="the replica promoted")
        # The new master has no replica: with wait_replicas 1 its shards are not durable, so the
        # workers hold their commits (backpressure) until the old master returns as its replica.
        held = committed_offsets(settings)
        cluster("redis-start", str(victim))
        wait_until(lambda: all_committed(settings), timeout=240, message="everything committed after the failover",
                   diagnose=lambda: f"committed {committed_offsets(settings)}, end {end_offsets(settings)}")
        assert sum(held.values()) < len(stream.records)
    finally:
        supervisor.request_stop()
        thread.join(120)
    assert "error" not in box, box
    rc = RedisCluster(host="127.0.0.1", port=17001 if victim == 17000 else 17000)
    stream.check(rc)
    assert read_parquet(settings).num_rows == len(stream.valid)
    check_placement_and_search(settings, rc, list(stream.valid))


def check_placement_and_search(settings, client: RedisCluster, ids: list[str]) -> None:
    """The 6 shard keys sit 2 on each of the 3 masters (the failover moved a master, not a slot),
    and search finds documents on every shard, merged into one ranking."""
    from pipelines.ops.status import redis_status
    from pipelines.serving.search import Searcher

    report = redis_status(settings)
    assert report["layout"] == "slots", report
    assert sorted(report["placement"].values()) == [2, 2, 2], report["placement"]
    searcher = Searcher(settings)
    searcher.setup()
    assert searcher.count() == len(ids)
    shards = set()
    for doc_id in ids[::50]:
        vector = np.asarray(client.vset().vemb(searcher.index.key_for(doc_id), doc_id), dtype=np.float32)
        hits = searcher.search_vector(vector, k=5)
        assert hits[0].id == doc_id and hits[0].score > 0.999, (doc_id, hits[:2])
        shards.add(searcher.index.shard_of(doc_id))
    assert shards == set(range(6))
    hits = searcher.search("속보 정부 발표 금리", k=30)  # through the encoder, over all shards at once
    assert len(hits) == 30 and len({searcher.index.shard_of(h.id) for h in hits}) > 1


def test_a_ray_node_stopped_its_partitions_move_and_the_replica_returns(local_cluster, tiny_model_dir, tmp_path,
                                                                          unique):
    from pipelines.ops.status import collect_status

    settings = cluster_settings(tiny_model_dir, tmp_path, unique)
    stream = Stream(settings, 1500, n_bad=3, seed=12, partitions=6)
    supervisor, thread, box = supervised(settings)
    try:
        stream.send(500)
        wait_until(lambda: stream.committed() > 200, timeout=120, message="progress with two replicas")
        cluster("ray-node-stop")                         # (c) the second node goes away with its replica
        stream.send(500)
        wait_until(lambda: collect_status(settings, actors=True)["problems"], timeout=60,
                   message="status to report the missing replica")
        wait_until(lambda: stream.committed() >= 900, timeout=180, message="the other replica takes the partitions")
        cluster("ray-node-start")
        stream.send()
        wait_until(lambda: all_committed(settings), timeout=240, message="everything committed")
        wait_until(lambda: not collect_status(settings, actors=True)["problems"], timeout=180,
                   message="the replica back on the returned node")
        report = status_from_the_cli(settings, tmp_path)
        assert [a["up"] for a in report["actors"]["actors"]] == [True, True], report["actors"]
    finally:
        supervisor.request_stop()
        thread.join(120)
    assert "error" not in box, box
    stream.check(RedisCluster(host="127.0.0.1", port=17000))
    assert read_parquet(settings).num_rows == len(stream.valid)


def status_from_the_cli(settings, tmp_path) -> dict:
    """`embedworker status --json` in a process of its own, as an operator runs it: no
    RAY_AUTH_MODE in its environment (the config's ray.auth_mode must reach Ray before it loads)."""
    config = tmp_path / "cluster-test.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([sys.executable, "-m", "pipelines.cli.main", "status", "--json", "--config", str(config)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 3), done.stderr[-2000:]  # 3: a problem, which the caller looks at
    return json.loads(done.stdout)


def test_autoscaling_adds_a_replica_on_the_other_ray_node_and_removes_it_when_idle(local_cluster, tiny_model_dir,
                                                                                   tmp_path, unique):
    """One GPU per node: the replica the backlog asks for can only land on the other node. Replicas
    are paced at 50 docs/s each (tests.support.workers.PacedWorker), as loaded GPUs."""
    from tests.support.workers import PacedWorker

    settings = cluster_settings(tiny_model_dir, tmp_path, unique, workers={
        "max_in_flight": 512, "autoscale": {"enabled": True, "min_replicas": 1, "max_replicas": 2, "catch_up_s": 5,
                                            "scale_down_after_s": 8, "cooldown_s": 2, "interval_s": 1}})
    stream = Stream(settings, 2000, n_bad=2, seed=13, partitions=6)
    stream.send()
    supervisor = StreamSupervisor(settings, worker_class=PacedWorker)
    supervisor.start()
    thread, box = run_in_thread(lambda: supervisor.supervise(poll_s=0.5))
    try:
        def nodes() -> set:
            return {s.get("node") for s in supervisor.stats(timeout=5) if s.get("written")}
        wait_until(lambda: len(nodes()) == 2, timeout=120, message="a second replica writing on the other node",
                   diagnose=lambda: f"{supervisor.scaling.state()} {supervisor.stats()}")
        wait_until(lambda: all_committed(settings), timeout=240, message="everything committed")
        wait_until(lambda: supervisor.running == 1 and not supervisor._draining, timeout=90,
                   message="back to one replica", diagnose=lambda: str(supervisor.scaling.state()))
    finally:
        supervisor.request_stop()
        thread.join(120)
    assert "error" not in box, box
    stream.check(RedisCluster(host="127.0.0.1", port=17000))
