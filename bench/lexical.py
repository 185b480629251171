"""What the lexical index costs: build time and memory per document, the snapshot, and the delay
of a refresh after a small commit, on a real Delta lake written by the lake sink.

    python bench/lexical.py                               # 100,000 documents
    python bench/lexical.py --docs 20000 --out bench/results/lexical.json

Documents are the shipped news passages (Korean and English), three to a document with a serial
number, so that every document differs (~400 characters, a news lead's length). Prints one JSON
object: seconds are wall time, `cpu_s` this process's CPU time (from /proc, via os.times), memory
the process's resident set before and after (psutil).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COMMIT_ROWS = 5000


def passages() -> list[tuple[str, str, str]]:
    out = []
    for name in ("eval_corpus.jsonl", "news_sample.jsonl"):
        with open(ROOT / "pipelines" / "demo_data" / name, encoding="utf-8") as f:
            for line in f:
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the demo's sample holds bad records on purpose
                if not isinstance(d, dict) or not isinstance(d.get("text"), str) or not d["text"].strip():
                    continue
                out.append((d.get("title") or "", d["text"], d.get("lang") or "ko"))
    return out


def write_lake(root: str, docs: int, first_offset: int = 0) -> None:
    import numpy as np

    from workers.settings import ParquetSettings
    from workers.sinks.base import SinkRecord
    from workers.sinks.lake import DeltaLakeSink

    rng = random.Random(first_offset)
    pool = passages()
    zero = np.zeros(4, np.float32)
    day = datetime(2026, 12, 1, tzinfo=UTC)
    for start in range(first_offset, first_offset + docs, COMMIT_ROWS):
        records = []
        for n in range(start, min(first_offset + docs, start + COMMIT_ROWS)):
            parts = rng.sample(pool, 3)
            records.append(SinkRecord(id=f"doc-{n}", op="upsert", topic="news", partition=0, offset=n, vector=zero,
                                      title=f"{parts[0][0]} ({n})", text=" ".join(p[1] for p in parts),
                                      lang=parts[0][2], ingested_at=day))
        sink = DeltaLakeSink(ParquetSettings(path=root), "bench", "m", None, 4, "passage: ")
        sink.setup()
        sink.assign([("news", 0)])
        sink.write(records)
        sink.close()


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import psutil

    from pipelines.config import EmbedworkerSettings
    from pipelines.lexical.index import LexicalIndex

    proc = psutil.Process()
    tmp = tempfile.mkdtemp(prefix="lexical-bench-")
    root = os.path.join(tmp, "lake")
    try:
        t0 = time.perf_counter()
        write_lake(root, args.docs)
        chars = sum(len(t) + len(x) for t, x, _ in passages()) / len(passages()) * 3
        print(f"wrote {args.docs} documents in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        settings = EmbedworkerSettings(parquet={"path": root})
        index = LexicalIndex(settings, "bench")
        index.analyzer.terms("워밍업 warm-up")  # Kiwi's model: loaded once per process, not a per-document cost
        rss0 = proc.memory_info().rss
        c0, t0 = cpu(), time.perf_counter()
        index.refresh()
        build = {"seconds": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu() - c0, 1), **index.last}
        rss1 = proc.memory_info().rss
        terms = sum(len(d[1]) for d in index.docs.values())
        t0 = time.perf_counter()
        where = index.save_snapshot()
        save_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(root, where).iterdir())
        fresh = LexicalIndex(settings, "bench", index.analyzer)
        t0 = time.perf_counter()
        fresh.load_snapshot()
        load_s = time.perf_counter() - t0
        write_lake(root, 100, first_offset=args.docs)  # one small commit, as the stream makes them
        c0, t0 = cpu(), time.perf_counter()
        fresh.refresh()
        refresh = {"seconds": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu() - c0, 2), **fresh.last}
        t0 = time.perf_counter()
        queries = ["기준금리 동결", "반도체 수출 증가", "HBM3E mass production", "태풍 제주 결항", "전세 보증금"] * 20
        for q in queries:
            index.search(q, 50)
        per_100k = 100_000 / args.docs
        report = {
            "machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d"), "documents": args.docs,
            "chars_per_document": round(chars), "terms_per_document": round(terms / args.docs, 1),
            "build": build, "build_cpu_ms_per_document": round(build["cpu_s"] * 1000 / args.docs, 2),
            "memory_mb": round((rss1 - rss0) / 1e6, 1), "memory_mb_per_100k": round((rss1 - rss0) / 1e6 * per_100k, 1),
            "snapshot": {"save_s": round(save_s, 2), "mb": round(size / 1e6, 1), "load_s": round(load_s, 2)},
            "refresh_after_100_docs": refresh,
            "search_ms": round((time.perf_counter() - t0) * 1000 / len(queries), 2),
        }
        text = json.dumps(report, indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
