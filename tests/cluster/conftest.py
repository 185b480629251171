"""The local scale-out cluster (infra/local/cluster.sh): started for these tests if it is not
running, stopped afterwards only if they started it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER = ["bash", str(REPO / "infra" / "local" / "cluster.sh")]


def cluster(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([*CLUSTER, *args], cwd=REPO, check=check, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def local_cluster():
    running = cluster("status", check=False).returncode == 0
    if not running:
        started = cluster("up", check=False)
        if started.returncode != 0:
            cluster("down", check=False)  # what did start must not hold ports for the other tests
        assert started.returncode == 0, f"cluster.sh up failed:\n{started.stderr[-3000:]}"
    yield
    import ray

    ray.shutdown()  # this process joined the cluster's Ray: the next modules start local ones
    if not running:
        cluster("down", check=False)
