"""Backfill scaling: 1 versus 2 encoder actors/processes, same documents, ratio in one run.

    # this machine: the real backfill (Ray Data actor pool, Redis + Parquet sinks), needs `make up`
    .venv/bin/python bench/backfill.py --mode ray --n 240
    # a GPU box (only torch, transformers, numpy needed): 1 vs 2 encoder processes sharing the
    # device, which is the split fractional `workers.num_gpus: 0.5` gives
    python bench/backfill.py --mode processes --device cuda --n 20000

Documents: the anchors' generator (`--mix news|short`); model: the KoEn-E5-Tiny shape with
random weights around the stand-in tokenizer. Prints one JSON object with docs/s for each
setting and the ratio of 2 to 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _encode_share(model_dir: str, device: str, texts: list[str], budget: int, threads: int | None,
                  ready, start, queue) -> None:
    from workers.encoding.encoder import Encoder

    enc = Encoder.load(model_dir, device=device, max_batch_tokens=budget, torch_threads=threads)
    enc.encode_documents(texts[:64])  # warm-up (CUDA context, kernels)
    ready.put(os.getpid())
    start.wait()
    t0 = time.perf_counter()
    enc.encode_documents(texts)
    queue.put((t0, time.perf_counter()))


def processes(model_dir: str, device: str, texts: list[str], n_proc: int, budget: int) -> float:
    """docs/s of n_proc processes each encoding an equal share, from the common start to the last finish."""
    ctx = mp.get_context("spawn")
    ready, start, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
    threads = None if device.startswith("cuda") else max(1, (os.cpu_count() or 1) // n_proc)
    shares = [texts[i::n_proc] for i in range(n_proc)]
    procs = [ctx.Process(target=_encode_share, args=(model_dir, device, share, budget, threads, ready, start, queue))
             for share in shares]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)  # every process has loaded its model and warmed up
    start.set()
    spans = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return len(texts) / (max(e for _, e in spans) - min(s for s, _ in spans))


def ray_backfill(model_dir: str, texts: list[str], actors: int, tmp: Path) -> float:
    import uuid

    from pipelines.batch.backfill import BackfillJob
    from pipelines.config import load_settings

    folder = tmp / f"input-{actors}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n")
    tag = uuid.uuid4().hex[:8]
    settings = load_settings(None, {
        "model": {"name": model_dir}, "redis": {"key_prefix": f"benchbf{tag}"},
        "parquet": {"path": str(tmp / f"out-{tag}")},
        "workers": {"replicas": actors, "num_gpus": 0, "num_cpus": 2 / actors}, "ray": {"num_cpus": 2},
        "logging": {"level": "WARNING"}})
    job = BackfillJob(settings, str(folder / "*.jsonl"), unit_mb=max(0.01, os.path.getsize(folder / "docs.jsonl") / 1e6 / 8))
    t0 = time.perf_counter()
    job.run(min_actors=actors, max_actors=actors)
    return len(texts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["ray", "processes"], default="ray")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--mix", default="news", choices=["news", "short"])
    ap.add_argument("--max-batch-tokens", type=int, default=None)
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()

    from encoder import _cpu_name
    from mixes import docs, stand_in_tokenizer

    from tests.support.models import make_random_model

    texts = docs(args.mix, args.n)
    model_dir = str(make_random_model(Path(tempfile.gettempdir()) / "embedworker-bench-koen-e5-tiny",
                                      shape="koen-e5-tiny", tokenizer_json=stand_in_tokenizer(args.shared)))
    res = {"bench": "backfill", "mode": args.mode, "mix": args.mix, "n": args.n, "date": time.strftime("%Y-%m-%d")}
    if args.mode == "ray":
        tmp = Path(tempfile.mkdtemp(prefix="embedworker-bench-backfill-"))
        res["machine"] = _cpu_name()
        res["one_actor_docs_s"] = round(ray_backfill(model_dir, texts, 1, tmp), 2)
        res["two_actors_docs_s"] = round(ray_backfill(model_dir, texts, 2, tmp), 2)
        res["two_vs_one"] = round(res["two_actors_docs_s"] / res["one_actor_docs_s"], 3)
    else:
        import torch

        budget = args.max_batch_tokens or (65536 if args.device.startswith("cuda") else 16384)
        res["machine"] = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else _cpu_name()
        res["one_process_docs_s"] = round(processes(model_dir, args.device, texts, 1, budget), 2)
        res["two_processes_docs_s"] = round(processes(model_dir, args.device, texts, 2, budget), 2)
        res["two_vs_one"] = round(res["two_processes_docs_s"] / res["one_process_docs_s"], 3)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
