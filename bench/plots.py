"""Charts from the recorded benchmark results (`make plots`): reads bench/results/*.json, writes
PNGs to bench/plots/. Nothing is measured here, so the charts are reproducible without a rerun;
each title names the machine and the date of the run it draws.

    encoder.png    (a) our encoder vs sentence-transformers `encode`, docs/s by precision and mix
    hostpath.png   (b) CPU per document around the model, by stage, before and after (stacked)
    index.png      (c) recall@10 vs queries/s for NOQUANT / Q8 / BIN across EF and shard counts
    latency.png    (d) end-to-end latency (Kafka timestamp -> found in Redis), CDF with p50/p95/p99
    capacity.png   (e) one vector set as it grows to 1M: bytes, server CPU per insert, recall
    capacity_sentences.png (f) real e5 embeddings: CPU per insert and recall by (quantization, M,
                   insert EF), and recall against query EF at the largest size, with each
                   quantization's ceiling (exact search over the quantized vectors)
    serve.png      (g) the query service against Infinity in the same run: queries/s and CPU-ms
                   per request by concurrent clients (and ours for /search)
    hybrid.png     (h) NDCG@10 and recall@10 of dense, lexical and hybrid search per language
    nemesis.png    (i) faults on the wire: seconds from each heal to the first commit (every
                   round, p50 and max per fault), the input's pause after a sink fault, and the
                   rounds' lost / doubled / stale counts in the titles

A chart whose results file is missing is skipped with a line saying which bench makes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after the backend is chosen
import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLORS = {"st": "#9e9e9e", "fp32": "#1f77b4", "bf16": "#2ca02c", "int8": "#ff7f0e", "fp16": "#9467bd",
          "noquant": "#1f77b4", "q8": "#2ca02c", "bin": "#d62728"}


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def encoder_chart(out: Path) -> str | None:
    runs = [r for r in (load("encoder_news.json"), load("encoder_short.json")) if r]
    if not runs:
        return "bench/encoder.py --mix news --out bench/results/encoder_news.json (and --mix short)"
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.2
    for i, run in enumerate(runs):
        bars = [("sentence-transformers", run[next(k for k in run if k.startswith("st_") and k.endswith("_docs_s"))], "st")]
        bars += [(f"ours {k.split('_')[1]}", v, k.split("_")[1]) for k, v in run.items()
                 if k.startswith("ours_") and k.endswith("_docs_s")]
        for j, (label, value, color) in enumerate(bars):
            x = i + (j - (len(bars) - 1) / 2) * width
            ax.bar(x, value, width * 0.92, color=COLORS.get(color, "#777"), label=label if i == 0 else None)
            ratio = value / bars[0][1]
            ax.annotate(f"{value:.0f}\n×{ratio:.2f}", (x, value), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(runs)), [f"{r['mix']} mix ({r.get('mean_tokens', '?')} tokens/doc, n={r['n']})"
                                     for r in runs])
    ax.set_ylabel("documents per second")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper left")
    first = runs[0]
    ax.set_title(f"Encoder vs sentence-transformers encode(), {first['device']} "
                 f"({first['device_name']}, {first['torch_threads']} threads), {first['date']}", fontsize=9)
    return _save(fig, out / "encoder.png")


def hostpath_chart(out: Path) -> str | None:
    runs = [("before (short;\nRedis: 256 distinct\nstub vectors)", load("hostpath_short_before.json")), ("after\n(short)", load("hostpath_short.json")),
            ("after, EF 100\n(short)", load("hostpath_short_ef100.json")), ("after\n(news)", load("hostpath_news.json")),
            ("real encoder path,\nzero-layer model\n(short)", load("hostpath_short_zero_layer.json"))]
    runs = [(label, r) for label, r in runs if r]
    if not runs:
        return "bench/hostpath.py --mix short --json > bench/results/hostpath_short.json"
    stages = [("tokenize (worker)", "tokenize_cpu_ms_per_doc", "#1f77b4"),
              ("rest of the worker", "overhead_cpu_ms_per_doc", "#aec7e8"),
              ("redis-server", "redis_cpu_ms_per_doc", "#d62728"),
              ("Kafka broker", "kafka_cpu_ms_per_doc", "#7f7f7f")]
    fig, ax = plt.subplots(figsize=(8, 4.4))
    for i, (_, run) in enumerate(runs):
        bottom = 0.0
        for name, key, color in stages:
            value = run.get(key)
            if value is None:
                continue
            ax.bar(i, value, 0.6, bottom=bottom, color=color, label=name if i == 0 or name == "Kafka broker" else None)
            bottom += value
        ax.annotate(f"{bottom:.2f}", (i, bottom), ha="center", va="bottom", fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    ax.set_xticks(range(len(runs)), [label for label, _ in runs], fontsize=8)
    ax.set_ylabel("CPU ms per document")
    ax.margins(y=0.15)
    last = runs[-1][1]
    ax.set_title(f"Host path: CPU per document around the model (stub forward), {last['machine']}, {last['date']}",
                 fontsize=9)
    return _save(fig, out / "hostpath.png")


def index_chart(out: Path) -> str | None:
    run = load("index.json")
    if not run:
        return "bench/index.py --out bench/results/index.json"
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    rows = [r for r in run["rows"] if r["set"] == "clustered" and "ef" in r]
    for name in sorted({r["index"] for r in rows}):
        series = sorted((r for r in rows if r["index"] == name), key=lambda r: r["ef"])
        quant, shards = name.split(" x")
        ax.plot([r["queries/s"] for r in series], [r["recall@10"] for r in series],
                marker="o" if shards == "1" else "s", linestyle="-" if shards == "1" else "--",
                color=COLORS.get(quant, "#777"), label=f"{quant.upper()}, {shards} shard(s)")
        for r in series if shards == "1" else ():  # the 4-shard curves follow the same EF order
            ax.annotate(f"EF {r['ef']}", (r["queries/s"], r["recall@10"]), fontsize=6, xytext=(3, -8),
                        textcoords="offset points")
    ax.set_xlabel("queries per second (one client, shards searched in parallel)")
    ax.set_ylabel("recall@10 vs exact search")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(f"Redis vector sets: {run['n']:,} clustered 384-d vectors, M {run['m']}, EF build "
                 f"{run['ef_build']}, {run.get('machine', '?')}, {run.get('date', '?')}", fontsize=9)
    return _save(fig, out / "index.png")


def latency_chart(out: Path) -> str | None:
    run = load("stream_latency.json")
    if not run or not run.get("latency_ms"):
        return "bench/stream.py --skip-throughput --out bench/results/stream_latency.json"
    lat = np.sort(np.asarray(run["latency_ms"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), color="#1f77b4")
    for q, color in ((50, "#2ca02c"), (95, "#ff7f0e"), (99, "#d62728")):
        v = float(np.percentile(lat, q))
        ax.axvline(v, color=color, linestyle="--", linewidth=1)
        ax.annotate(f"p{q} {v:.0f} ms", (v, 0.05 + q / 250), color=color, fontsize=8, xytext=(4, 0),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("Kafka record timestamp → found by VSIM in Redis (ms, log scale)")
    ax.set_ylabel("fraction of documents")
    ax.grid(alpha=0.3, which="both")
    ax.set_title(f"End-to-end latency at {run['rate_docs_s']:.0f} docs/s, {run['found']} of {run['sent']} documents, "
                 f"{run['latency_model']}, {run['machine']}, {run['date']}", fontsize=9)
    return _save(fig, out / "latency.png")


def capacity_chart(out: Path) -> str | None:
    runs = [r for r in (load("capacity_100k.json"), load("capacity_1m.json")) if r]
    if not runs:
        return "bench/capacity.py --out bench/results/capacity_100k.json"
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for n, run in enumerate(runs):  # each run its own dataset (its topics grow with --max): not merged
        rows = run["rows"]
        size = f", to {max(r['vectors'] for r in rows) // 1000}k of the 1M set" if n else ""
        for quant, m in sorted({(r["quantization"], r["m"]) for r in rows}):
            series = sorted((r for r in rows if (r["quantization"], r["m"]) == (quant, m)), key=lambda r: r["vectors"])
            style = dict(marker="o" if m == 16 else "s", linestyle=":" if n else ("-" if m == 16 else "--"),
                         color="#222" if n else COLORS.get(quant, "#777"), label=f"{quant.upper()}, M {m}{size}")
            x = [r["vectors"] for r in series]
            axes[0].plot(x, [r["bytes_per_vector"] for r in series], **style)
            axes[1].plot(x, [r["server_cpu_ms_per_insert"] for r in series], **style)
            axes[2].plot(x, [r["recall_at_10"] for r in series], **style)
    _log_panels(fig, axes, ("bytes per vector (INFO used_memory)", "redis-server CPU ms per insert (EF 200)",
                            "recall@10 vs exact (query EF 200)"),
                "One vector set as it grows: 384-d clustered vectors with news attributes", runs[0])
    return _save(fig, out / "capacity.png")


def capacity_sentences_chart(out: Path) -> str | None:
    run = load("capacity_sentences.json")
    if not run:
        return "bench/capacity.py --data sentences --out bench/results/capacity_sentences.json"
    rows = run["rows"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    configs = sorted({(r["quantization"], r["m"], r["ef_build"]) for r in rows})
    largest = max(r["vectors"] for r in rows)
    for quant, m, ef in configs:
        series = sorted((r for r in rows if (r["quantization"], r["m"], r["ef_build"]) == (quant, m, ef)),
                        key=lambda r: r["vectors"])
        style = dict(marker="o" if m == 16 else "s", linestyle="-" if ef >= 200 else "--",
                     color=COLORS.get(quant, "#777"), label=f"{quant.upper()}, M {m}, EF {ef}")
        x = [r["vectors"] for r in series]
        axes[0].plot(x, [r["server_cpu_ms_per_insert"] for r in series], **style)
        axes[1].plot(x, [r["recall_at_10"] for r in series], **style)
        by_ef = series[-1].get("by_query_ef") or {}
        efs = sorted(by_ef, key=int)
        axes[2].plot([int(e) for e in efs], [by_ef[e]["recall_at_10"] for e in efs], **style)
    for quant in sorted({c[0] for c in configs}):
        top = max(r["recall_ceiling"] for r in rows if r["quantization"] == quant and r["vectors"] == largest)
        axes[2].axhline(top, color=COLORS.get(quant, "#777"), alpha=0.5, linewidth=1)
    axes[2].axhline(0.99, color="#000", linestyle=":", linewidth=1)
    _log_panels(fig, axes, ("redis-server CPU ms per insert", "recall@10 vs exact (first query EF)",
                            f"recall@10 at {largest // 1000}k vs query EF (lines: ceilings, 0.99)"),
                "Real e5 embeddings of local English sentences (bench/sentence_vectors.py)", run)
    axes[2].set_xlabel("query EF")
    return _save(fig, out / "capacity_sentences.png")


def _log_panels(fig, axes, labels, title: str, run: dict) -> None:
    """Log-scaled x (vectors in the set), the labels, a legend in the first panel, the title with
    the run's machine and date."""
    for ax, label in zip(axes, labels):
        ax.set_xscale("log")
        ax.set_xlabel("vectors in the set")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}, {run.get('machine', '?')}, {run.get('date', '?')}", fontsize=10)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return None


def serve_chart(out: Path) -> str | None:
    run = load("serve.json")
    if not run or "infinity" not in run or "embedworker" not in run:
        return "bench/serve.py --out bench/results/serve.json"
    series = [("Infinity /embeddings", run["infinity"]["/embeddings"], "#9e9e9e", "-"),
              ("ours /v1/embeddings", run["embedworker"]["/v1/embeddings"], "#1f77b4", "-"),
              ("ours /search", run["embedworker"]["/search"], "#1f77b4", "--")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for label, levels, color, style in series:
        x = [r["clients"] for r in levels]
        axes[0].plot(x, [r["qps"] for r in levels], style, color=color, marker="o", label=label)
        axes[1].plot(x, [r["cpu_ms_per_request"] for r in levels], style, color=color, marker="o", label=label)
    for ax, label in zip(axes, ("queries per second", "CPU-ms per request (machine minus client)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Query service vs Infinity 0.0.78, same run: {run['model']}, CPU, {run['cpus']} cores, "
                 f"{run['date']}", fontsize=9)
    return _save(fig, out / "serve.png")


def hybrid_chart(out: Path) -> str | None:
    run = load("eval_modes.json")
    if not run or not run.get("modes"):
        return "embedworker eval -c configs/local.yaml --json > bench/results/eval_modes.json"
    rows = run["modes"]["rows"]
    groups = list(dict.fromkeys(r["queries"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    colors = {"dense": "#1f77b4", "lexical": "#ff7f0e", "hybrid": "#2ca02c", "hybrid reranked": "#9467bd"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    width = 0.8 / len(modes)
    for ax, metric in zip(axes, ("ndcg@10", "recall@10")):
        for i, mode in enumerate(modes):
            values = [next(r[metric] for r in rows if r["queries"] == g and r["mode"] == mode) for g in groups]
            xs = [n + (i - (len(modes) - 1) / 2) * width for n in range(len(groups))]
            bars = ax.bar(xs, values, width, label=mode, color=colors.get(mode))
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        counts = {r["queries"]: r["count"] for r in rows}
        ax.set_xticks(range(len(groups)), [f"{g} ({counts[g]} queries)" for g in groups])
        ax.set_ylabel(metric.replace("@", " @ "))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Dense, lexical (BM25, Kiwi) and hybrid (RRF k={run['modes']['rrf_k']}): {run['model']}, "
                 f"{run['documents']} documents, CPU, {run.get('date', '')}", fontsize=9)
    return _save(fig, out / "hybrid.png")


def nemesis_chart(out: Path) -> str | None:
    runs = [run for run in (load("nemesis.json"), load("nemesis_s3.json")) if run and run.get("reports")]
    if not runs:
        return "bench/nemesis.py --out bench/results/nemesis.json"
    reports = [r for run in runs for r in run["reports"]]
    faults = sorted({r["fault"] for r in reports}, key=lambda f: (f.count("+") > 1 or " + " in f, f))
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(faults) + 1.6))
    for y, fault in enumerate(faults):
        rec = [r["recovery_s"] for r in reports if r["fault"] == fault and r["recovery_s"] is not None]
        paused = [r["paused_after_s"] for r in reports if r["fault"] == fault and r["paused_after_s"] is not None]
        ax.scatter(rec, [y] * len(rec), color="#1f77b4", s=14, alpha=0.7, label="heal -> first commit" if y == 0 else None)
        if paused:
            ax.scatter(paused, [y] * len(paused), color="#ff7f0e", marker="x", s=16,
                       label="fault -> input paused" if not ax.get_legend_handles_labels()[1].count("fault -> input paused") else None)
    ax.axvline(5.0, color="#d62728", linestyle="--", linewidth=1, label="target: 5 s after the heal")
    ax.set_yticks(range(len(faults)), faults, fontsize=7)
    ax.set_xlabel("seconds")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="lower right")
    ends = "; ".join(f"{run.get('lake', 'disk')} lake: {run['rounds']} rounds, lost {run['end']['lost']}, doubled "
                     f"{run['end']['doubled']}, stale {run['end']['stale']}" for run in runs)
    fig.suptitle(f"Nemesis (Toxiproxy, SIGSTOP, a full disk): {ends}; {runs[0]['machine']}, {runs[0]['date']}", fontsize=8)
    return _save(fig, out / "nemesis.png")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "plots"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [m for m in (encoder_chart(out), hostpath_chart(out), index_chart(out), latency_chart(out),
                           capacity_chart(out), capacity_sentences_chart(out), serve_chart(out), hybrid_chart(out),
                           nemesis_chart(out)) if m]
    for how in missing:
        print(f"skipped a chart: no results yet; make them with {how}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
