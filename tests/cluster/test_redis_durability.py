"""What `redis.wait_replicas` buys, shown on the local Redis Cluster: Redis replicates
asynchronously, so a batch the master acknowledged but had not yet sent to its replica is gone
after a failover. The replica is made to fall behind the way a slow or stalled replica does: it
is paused (SIGSTOP) and the master's replication stream to it is filled past the sockets'
buffers, so the batch waits in the master's own memory; then the master is killed -9 and the
replica, resumed, is promoted without it. Without wait_replicas the sink acknowledged the batch
(a worker would have committed its offsets: the documents are lost for good); with
wait_replicas 1 the same batch is backpressure (WAIT 1 counts no replica), never acknowledged, and
written again once the new master has a replica."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from redis.cluster import RedisCluster

from tests.cluster.conftest import cluster, master_of, promoted, replica_of
from tests.helpers import wait_until
from workers.errors import SinkBackpressureError
from workers.settings import RedisSettings
from workers.sinks.base import SinkRecord
from workers.sinks.redis_vset import RedisVectorSetSink

pytestmark = [pytest.mark.integration, pytest.mark.cluster]
FILLER_MB = 96  # more than a loopback socket's receive (32 MB here) and send (4 MB) buffers hold


def batch(first: int, count: int) -> list[SinkRecord]:
    rng = np.random.default_rng(first)
    vectors = rng.standard_normal((count, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [SinkRecord(id=f"d{first + i}", op="upsert", topic="t", partition=0, offset=first + i, vector=v)
            for i, v in enumerate(vectors)]


def failover_with_a_lagging_replica(settings: RedisSettings) -> tuple[bool, RedisVectorSetSink, RedisCluster]:
    """Write 200 vectors, make the key's replica lag, write 200 more, kill the master, let the
    replica take over; bring the old master back as a replica. Whether the sink acknowledged
    the second batch, the sink, and a client of the cluster as it is now."""
    sink = RedisVectorSetSink(settings, "durability", "durability", dim=8)
    sink.setup()
    key = sink.index.base
    client = RedisCluster(host="127.0.0.1", port=17000)
    master = master_of(client, key)
    replica = replica_of(master, ask=master)
    sink.write(batch(0, 200))
    raw = redis.Redis(port=master)
    assert raw.execute_command("WAIT", 1, 10_000) == 1  # the replica holds the first batch
    cluster("redis-pause", str(replica))
    try:
        filler = b"x" * (8 << 20)
        pipe = raw.pipeline(transaction=False)
        for i in range(FILLER_MB // 8):
            pipe.set(f"{{{key}}}:filler:{i}", filler)  # the key's own slot: the same master
        pipe.execute()
        try:
            sink.write(batch(200, 200))
            acknowledged = True
        except SinkBackpressureError:
            acknowledged = False
        cluster("redis-kill", str(master))
    finally:
        cluster("redis-resume", str(replica))
    other = RedisCluster(host="127.0.0.1", port=replica)
    wait_until(lambda: promoted(other, key, master), timeout=60, message="the lagging replica promoted")
    cluster("redis-start", str(master))  # back as a replica: the cluster has 3 + 3 nodes again
    other.delete(*(f"{{{key}}}:filler:{i}" for i in range(FILLER_MB // 8)))  # what reached the replica
    return acknowledged, sink, other


def stored(client: RedisCluster, key: str, ids: range) -> int:
    pipe = client.pipeline()
    for i in ids:
        pipe.execute_command("VISMEMBER", key, f"d{i}")
    return sum(bool(x) for x in pipe.execute())


def test_without_wait_replicas_a_failover_loses_acknowledged_vectors(local_cluster, unique):
    settings = RedisSettings(url="redis://127.0.0.1:17000/0", cluster=True, key_prefix=f"nowait{unique}",
                             quantization="noquant", wait_replicas=0)
    acknowledged, sink, client = failover_with_a_lagging_replica(settings)
    assert acknowledged, "without wait_replicas the master's OK is the acknowledgement"
    assert stored(client, sink.index.base, range(200)) == 200
    assert stored(client, sink.index.base, range(200, 400)) == 0, "acknowledged, then lost in the failover"


def test_with_wait_replicas_a_batch_the_replica_lacks_is_never_acknowledged(local_cluster, unique):
    settings = RedisSettings(url="redis://127.0.0.1:17000/0", cluster=True, key_prefix=f"wait{unique}",
                             quantization="noquant", wait_replicas=1, wait_timeout_s=1)
    acknowledged, sink, client = failover_with_a_lagging_replica(settings)
    assert not acknowledged, "WAIT 1 counted no replica: backpressure, so the worker commits nothing"
    second = batch(200, 200)

    def written_again() -> bool:  # what the sink stage does with backpressure: try again
        try:
            sink.write(second)
            return True
        except SinkBackpressureError:
            return False

    wait_until(written_again, timeout=90, message="the batch written once the new master has a replica")
    assert stored(client, sink.index.base, range(400)) == 400
