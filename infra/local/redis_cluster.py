"""Forms a Redis Cluster from running, empty cluster-mode nodes (infra/local/cluster.sh calls it):
the first third of the ports become masters with equal slot ranges, each other node replicates one
master; waits until every node reports `cluster_state:ok` and every replica has synced.
Idempotent: a cluster already formed on these ports is left alone.

    python infra/local/redis_cluster.py 17000 17001 17002 17003 17004 17005   # 3 masters + 3 replicas
    python infra/local/redis_cluster.py --rejoin 17000 17000 ... 17005        # a restarted, empty node
"""

from __future__ import annotations

import sys
import time

import redis

SLOTS = 16384


def node(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5, decode_responses=True)


def cluster_info(c: redis.Redis) -> dict:
    info = c.execute_command("CLUSTER", "INFO")
    return info if isinstance(info, dict) else dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)


def cluster_ok(c: redis.Redis) -> bool:
    return cluster_info(c).get("cluster_state") == "ok"


def ready(c: redis.Redis) -> bool:
    """The cluster is whole from this node, and if it is a replica, its sync is done (until then
    WAIT on its master counts no replica: a sink with wait_replicas would see backpressure)."""
    replication = c.info("replication")
    return cluster_ok(c) and (replication.get("role") == "master" or replication.get("master_link_status") == "up")


def form(ports: list[int], masters: int) -> None:
    clients = [node(p) for p in ports]
    if all(cluster_ok(c) for c in clients):
        print(f"redis cluster on {ports}: already formed")
        return
    for i, c in enumerate(clients[:masters]):
        first, last = i * SLOTS // masters, (i + 1) * SLOTS // masters - 1
        try:
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        except redis.ResponseError as exc:  # a second run: the slots are this node's already
            if "busy" not in str(exc).lower():
                raise
    for c in clients[1:]:
        c.execute_command("CLUSTER", "MEET", "127.0.0.1", ports[0])
    ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
    deadline = time.monotonic() + 60
    for i, c in enumerate(clients[masters:]):
        master = ids[i % masters]
        while True:  # a node can replicate a master only once it knows it
            try:
                c.execute_command("CLUSTER", "REPLICATE", master)
                break
            except redis.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    while not all(ready(c) for c in clients):
        if time.monotonic() > deadline:
            raise SystemExit("redis cluster: not ok (or replicas not synced) after 60 s")
        time.sleep(0.2)
    assigned = int(cluster_info(clients[0])["cluster_slots_assigned"])
    if assigned != SLOTS:  # a node that held keys claimed their slots: not the layout asked for
        raise SystemExit(f"redis cluster: {assigned} of {SLOTS} slots assigned (did a node start with data?)")
    print(f"redis cluster on {ports}: {masters} masters, {len(ports) - masters} replicas, state ok")


def rejoin(port: int, ports: list[int]) -> None:
    """Bring an empty node back: meet a live node, then replicate the master with fewest replicas."""
    me = node(port)
    live = next(p for p in ports if p != port and _answers(p))
    me.execute_command("CLUSTER", "MEET", "127.0.0.1", live)
    deadline = time.monotonic() + 60
    while True:
        masters: dict[str, int] = {}
        replicas_of: dict[str, int] = {}
        for line in str(node(live).execute_command("CLUSTER", "NODES")).splitlines():
            parts = line.split()
            if "fail" in parts[2]:
                continue
            if "master" in parts[2] and len(parts) > 8:  # a master with slots
                masters.setdefault(parts[0], 0)
            elif "slave" in parts[2]:
                replicas_of[parts[3]] = replicas_of.get(parts[3], 0) + 1
        counts = {m: replicas_of.get(m, 0) for m in masters}
        try:
            target = min(counts, key=counts.get)
            me.execute_command("CLUSTER", "REPLICATE", target)
            break
        except (ValueError, redis.ResponseError):  # not known to the node yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    while not ready(me):
        if time.monotonic() > deadline:
            raise SystemExit(f"redis node {port}: not an ok, synced replica after 60 s")
        time.sleep(0.2)
    print(f"redis node {port}: rejoined as a replica of {target}")


def _answers(port: int) -> bool:
    try:
        return bool(node(port).ping())
    except redis.RedisError:
        return False


if __name__ == "__main__":
    if sys.argv[1] == "--rejoin":
        rejoin(int(sys.argv[2]), [int(p) for p in sys.argv[3:]])
    else:
        ports = [int(p) for p in sys.argv[1:]]
        form(ports, max(1, len(ports) // 2))
