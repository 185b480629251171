"""Encoder throughput: the project's Encoder against sentence-transformers encode(), same docs, one run.

    python bench/encoder.py --mix news --n 400                 # CPU: ST fp32 batch 32 vs ours fp32, int8
    python bench/encoder.py --mix news --n 20000 --device cuda # GPU: ST fp16 batch 128 vs ours fp16, bf16

Needs only torch, transformers, sentence-transformers and numpy (runs on a bare GPU box).
Model: the KoEn-E5-Tiny shape with random weights (speed does not depend on the weights),
around the stand-in tokenizer of the shared anchors (`--shared`, default ../shared/bench or
bench/_shared; without them the project's own copy of the recipe, bench/mixes.py). Documents:
the anchors' generator (bench/mixes.py; news: mean ~358 tokens; short: ~64).
Prints one JSON object: docs/s and tokens/s for each run and the ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, reps: int, warmup) -> float:
    """Best wall time of `reps` runs of `fn`, after `warmup()` (a small run of the same kind)."""
    warmup()
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mix", default="news", choices=["news", "short"])
    ap.add_argument("--n", type=int, default=None, help="documents (default 400 on CPU, 20000 on GPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default=None, help="ours, comma-separated (default: fp32,bf16,int8 on CPU; fp16,bf16 on GPU)")
    ap.add_argument("--max-batch-tokens", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--shared", default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    from mixes import docs, stand_in_tokenizer
    from sentence_transformers import SentenceTransformer

    from tests.support.models import make_random_model
    from workers.encoding.encoder import Encoder

    gpu = args.device.startswith("cuda")
    n = args.n or (20000 if gpu else 400)
    reps = args.reps or (3 if gpu else 1)
    dtypes = (args.dtypes or ("fp16,bf16" if gpu else "fp32,int8")).split(",")
    budget = args.max_batch_tokens or (65536 if gpu else 16384)
    texts = docs(args.mix, n)
    model_dir = make_random_model(Path(tempfile.gettempdir()) / "embedworker-bench-koen-e5-tiny",
                                  shape="koen-e5-tiny", tokenizer_json=stand_in_tokenizer(args.shared))

    res: dict = {"bench": "encoder", "mix": args.mix, "n": n, "device": args.device,
                 "device_name": torch.cuda.get_device_name(0) if gpu else _cpu_name(),
                 "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                 "date": time.strftime("%Y-%m-%d")}

    st_dtype, st_batch = (torch.float16, 128) if gpu else (torch.float32, 32)
    st = SentenceTransformer(str(model_dir), device=args.device, model_kwargs={"dtype": st_dtype})
    prefixed = ["passage: " + t for t in texts]
    t = timed(lambda: st.encode(prefixed, batch_size=st_batch, convert_to_numpy=True), args.device, reps,
              lambda: st.encode(prefixed[:2 * st_batch], batch_size=st_batch))
    baseline = n / t
    res[f"st_{'fp16' if gpu else 'fp32'}_b{st_batch}_docs_s"] = round(baseline, 2)
    reference = st.encode(prefixed[:64], batch_size=st_batch, normalize_embeddings=True)
    st = None  # free the baseline model before ours load

    for dtype in dtypes:
        enc = Encoder.load(str(model_dir), device=args.device, dtype=dtype, max_batch_tokens=budget)
        tokens = sum(len(x) for x in enc.tokenizer.tokenize(texts, "passage: ").ids)
        res.setdefault("tokens", tokens)
        res.setdefault("mean_tokens", round(tokens / n, 1))
        t = timed(lambda enc=enc: enc.encode_documents(texts), args.device, reps,
                  lambda enc=enc: enc.encode_documents(texts[:2 * st_batch]))
        ours = enc.encode_documents(texts[:64])
        res[f"ours_{dtype}_docs_s"] = round(n / t, 2)
        res[f"ours_{dtype}_tokens_s"] = round(tokens / t, 1)
        res[f"ours_{dtype}_ratio_vs_st"] = round(n / t / baseline, 3)
        res[f"ours_{dtype}_mean_cos_vs_st"] = round(float(np.mean(np.sum(ours * reference, axis=1))), 5)
        enc.close()
        del enc
        print(json.dumps(res), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" x{os.cpu_count()}"
    except OSError:
        pass
    return "cpu"


if __name__ == "__main__":
    main()
