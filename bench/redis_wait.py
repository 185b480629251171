"""What `redis.wait_replicas` costs: inserts/s through RedisVectorSetSink into the local Redis
Cluster (`make cluster-up`: 3 masters + 3 replicas) with and without `WAIT 1` after each batch,
both measured in this run, alternating, same vectors. Also what spreading the shard keys evenly
over the masters buys (the "slots" key layout, 2 shards per master, against the "plain" names an
index written before it keeps, which land 3/2/1): both without WAIT. Prints one JSON object.

    .venv/bin/python bench/redis_wait.py --n 6000 --batch 256 --out bench/results/redis_wait.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def run(n: int, batch: int, wait: int, vectors: np.ndarray, tag: str, layout: str = "slots") -> float:
    from workers.settings import RedisSettings
    from workers.sinks.base import SinkRecord
    from workers.sinks.redis_client import connect
    from workers.sinks.redis_vset import RedisVectorSetSink

    settings = RedisSettings(url="redis://127.0.0.1:17000/0", cluster=True, shards=6, key_prefix=f"benchwait{tag}",
                             wait_replicas=wait, quantization="q8")
    sink = RedisVectorSetSink(settings, "bench", "bench", vectors.shape[1])
    if layout == "plain":  # an index from before the slots layout: meta without key_layout
        connect(settings, settings.url).hset(
            sink.index.meta_key, mapping={"shards": settings.shards, "dim": vectors.shape[1]})
    sink.setup()
    assert sink.index.layout == layout
    records = [SinkRecord(id=f"d{i}", op="upsert", topic="t", partition=0, offset=i, vector=vectors[i])
               for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        sink.write(records[i:i + batch])
    seconds = time.perf_counter() - t0
    client = sink._clients[0]
    for key in sink.index.shard_keys() + [sink.index.meta_key]:
        client.delete(key)
    sink.close()
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from encoder import _cpu_name

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rates: dict[int, list[float]] = {0: [], 1: []}
    plain: list[float] = []
    for _ in range(args.rounds):
        for wait in (0, 1):
            rates[wait].append(run(args.n, args.batch, wait, vectors, uuid.uuid4().hex[:6]))
        plain.append(run(args.n, args.batch, 0, vectors, uuid.uuid4().hex[:6], layout="plain"))
    res = {"bench": "redis_wait", "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d"), "n": args.n,
           "batch": args.batch, "shards": 6, "masters": 3,
           "inserts_s_wait0": round(float(np.median(rates[0])), 1),
           "inserts_s_wait1": round(float(np.median(rates[1])), 1)}
    res["wait1_vs_wait0"] = round(res["inserts_s_wait1"] / res["inserts_s_wait0"], 3)
    res["inserts_s_plain_layout"] = round(float(np.median(plain)), 1)
    res["slots_vs_plain"] = round(res["inserts_s_wait0"] / res["inserts_s_plain_layout"], 3)
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
