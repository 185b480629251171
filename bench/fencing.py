"""What fenced Redis writes cost the Redis server, against plain pipelined VADDs, in one run.

The fenced path is the sink's own (`RedisVectorSetSink.write`: a Lua script per up to 16
elements that checks and records each element's source, workers/sinks/fenced_writes.py); the
baseline sends the same elements as the sink did before the fence: pipelined `VADD … SETATTR`
without a script. Both write the same 16,384-vector clustered set (the anchors' recipe, as
bench/hostpath.py) into fresh keys of the same Redis, in alternating rounds, and the server's CPU
seconds (user + system, from /proc) per insert are compared. Needs `make up` (Redis on :6379) or
`--port` of a redis-server this machine runs.

    .venv/bin/python bench/fencing.py [--n 20000] [--rounds 3] [--batch 256] [--port 6379]
Prints one JSON object per round and the summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hostpath import proc_cpu  # noqa: E402
from workers.settings import RedisSettings  # noqa: E402
from workers.sinks.base import SinkRecord  # noqa: E402
from workers.sinks.fenced_writes import element_attributes  # noqa: E402
from workers.sinks.redis_client import send_pipelined  # noqa: E402
from workers.sinks.redis_vset import RedisVectorSetSink  # noqa: E402

DIM = 384


def vectors(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((64, DIM)).astype(np.float32)
    table = centres[rng.integers(0, 64, n)] + 0.35 * rng.standard_normal((n, DIM)).astype(np.float32)
    return table / np.linalg.norm(table, axis=1, keepdims=True)


def records(vecs: np.ndarray) -> list[SinkRecord]:
    return [SinkRecord(id=f"doc-{i}", op="upsert", topic="news", partition=i % 6, offset=i, vector=v,
                       title=f"title {i}", lang="ko") for i, v in enumerate(vecs)]


def server_pid(client) -> int:
    return int(client.info("server")["process_id"])


def fenced(sink: RedisVectorSetSink, recs: list[SinkRecord], batch: int) -> None:
    for start in range(0, len(recs), batch):
        sink.write(recs[start:start + batch])


def plain(sink: RedisVectorSetSink, recs: list[SinkRecord], batch: int) -> None:
    """The sink's writes before the fence: pipelined VADDs with the same arguments."""
    s, key, client = sink.settings, sink.index.shard_keys()[0], sink._clients[0]
    quant = sink.quantization.upper()
    for start in range(0, len(recs), batch):
        commands = [("VADD", key, "FP32", np.ascontiguousarray(r.vector, dtype="<f4").tobytes(), r.id, quant,
                     "EF", s.ef, "SETATTR", element_attributes(r, sink.model_slug), "M", s.m)
                    for r in recs[start:start + batch]]
        for reply in send_pipelined(client, commands):
            if isinstance(reply, Exception):
                raise reply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256, help="records per sink write")
    ap.add_argument("--port", type=int, default=6379)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    recs = records(vectors(args.n))
    results: dict[str, list[float]] = {"plain": [], "fenced": []}
    for round_ in range(args.rounds):
        for kind, write in (("plain", plain), ("fenced", fenced)) if round_ % 2 == 0 else (("fenced", fenced),
                                                                                          ("plain", plain)):
            prefix = f"fencebench{uuid.uuid4().hex[:6]}"
            settings = RedisSettings(url=f"redis://127.0.0.1:{args.port}/0", key_prefix=prefix)
            sink = RedisVectorSetSink(settings, "bench", "bench", DIM)
            sink.setup()
            pid = server_pid(sink._clients[0])
            cpu0, t0 = proc_cpu(pid), time.perf_counter()
            write(sink, recs, args.batch)
            cpu, wall = proc_cpu(pid) - cpu0, time.perf_counter() - t0
            ms = cpu / len(recs) * 1000
            results[kind].append(ms)
            print(json.dumps({"round": round_, "kind": kind, "server_cpu_ms_per_insert": round(ms, 4),
                              "inserts_per_s": round(len(recs) / wall)}), flush=True)
            client = sink._clients[0]
            for key in client.scan_iter(match=f"{prefix}:*"):
                client.unlink(key)
            sink.close()
    summary = {kind: round(float(np.median(v)), 4) for kind, v in results.items()}
    summary.update(fenced_vs_plain=round(summary["fenced"] / summary["plain"], 3), n=args.n, batch=args.batch,
                   machine=os.uname().nodename, cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d"),
                   index="NOQUANT, M 16, EF 100 (the defaults), one shard")
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
