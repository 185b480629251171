"""The local scale-out cluster (infra/local/cluster.sh): started for these tests if it is not
running, stopped afterwards only if they started it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

REPO = Path(__file__).resolve().parents[2]
CLUSTER = ["bash", str(REPO / "infra" / "local" / "cluster.sh")]


def cluster(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CLUSTER, *args], cwd=REPO, check=check, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="package")
def local_cluster():
    """Up once for every test of this folder (each leaves it whole again), down after the last."""
    running = cluster("status", check=False).returncode == 0
    if not running:
        started = cluster("up", check=False)
        if started.returncode != 0:
            cluster("down", check=False)  # what did start must not hold ports for the other tests
        assert started.returncode == 0, f"cluster.sh up failed:\n{started.stderr[-3000:]}"
    yield
    if not running:
        cluster("down", check=False)


@pytest.fixture(scope="module", autouse=True)
def the_clusters_ray_only():
    """These tests join the cluster's Ray: a local one that earlier tests of this process started
    is left first (joining is skipped while one is open), and the cluster's is left after."""
    import ray

    ray.shutdown()
    yield
    ray.shutdown()


def master_of(client: RedisCluster, key: str) -> int:
    return client.get_node_from_key(key).port


def promoted(client: RedisCluster, key: str, old_master: int) -> bool:
    """Whether `key`'s slot has a master other than `old_master` (the failover happened)."""
    try:
        client.nodes_manager.initialize()
        return master_of(client, key) != old_master
    except redis.RedisError:
        return False


def replica_of(master: int, ask: int) -> int:
    """The port of a replica of the master on port `master`, as the node on port `ask` sees it."""
    nodes = redis.Redis(port=ask).execute_command("CLUSTER NODES")
    master_id = next(n["node_id"] for addr, n in nodes.items() if addr.startswith(f"127.0.0.1:{master}"))
    return next(int(addr.split(":")[1].split("@")[0]) for addr, n in nodes.items()
                if n["master_id"] == master_id and "fail" not in n["flags"])
