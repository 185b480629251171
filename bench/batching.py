"""What oldest-first batching costs in padding, and what it buys in waiting, without a model.

The anchors' news and short mixes (bench/mixes.py) are tokenized with the stand-in tokenizer
(passage prefix, truncated at 512) and put through `TokenBudgetBatcher` as a backlog: every
document pending at once, as a replica that polled a backlog holds them. For each age window
(`window_batches`; "all" is the batcher before the window: length grouping over everything
pending), it prints the padding ratio (padded tokens / real tokens - 1: compute spent on padding)
how far behind its arrival a document is encoded: the batch that holds the oldest document, and
the most batches released before a document's own beyond those first-in-first-out would release
(0 = first in, first out). Pure CPU, a few seconds:

    .venv/bin/python bench/batching.py [--docs 4096] [--tokens 16384] [--size 256]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.mixes import docs, stand_in_tokenizer  # noqa: E402
from workers.encoding.batching import TokenBudgetBatcher  # noqa: E402


def lengths(mix: str, n: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(stand_in_tokenizer()))
    tok.enable_truncation(512)
    return [len(e.ids) for e in tok.encode_batch([f"passage: {t}" for t in docs(mix, n)])]


def run(lens: list[int], window: int | None, tokens: int, size: int) -> dict:
    """The backlog through one batcher: padding, batches, and the worst delay behind arrival."""
    windows = window or 10**9 // tokens  # "all": a window wider than any backlog
    b = TokenBudgetBatcher(tokens, size, max_wait_ms=0, window_batches=windows)
    for i, n in enumerate(lens):
        b.add(i, n, now=0.0)
    batches = b.pop_ready(now=1.0)
    position = {i: k for k, batch in enumerate(batches) for i in batch.items}
    n, m = len(lens), len(batches)
    # behind: batches released before a document's own, beyond those first-in-first-out would put there
    behind = max(position[i] - i * m // n for i in range(n))
    return {"window_batches": window or "all", "batches": m, "padding_ratio": round(b.padding_overhead, 4),
            "mean_batch": round(n / m, 1), "oldest_doc_in_batch": position[0], "most_batches_behind": behind}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=4096, help="documents pending at once (workers.max_in_flight)")
    ap.add_argument("--tokens", type=int, default=16384, help="batching.max_batch_tokens")
    ap.add_argument("--size", type=int, default=256, help="batching.max_batch_size")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    rows = []
    for mix in ("news", "short"):
        lens = lengths(mix, args.docs)
        for window in (None, 16, 8, 4, 2, 1):
            row = {"mix": mix, "docs": args.docs, "mean_tokens": round(sum(lens) / len(lens), 1),
                   **run(lens, window, args.tokens, args.size)}
            rows.append(row)
            print(json.dumps(row))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
