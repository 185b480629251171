"""The nemesis's schedule: rounds of faults on the wire (Toxiproxy) and frozen services, random
from a seed, one at a time and two overlapping, against a worker (the code a replica runs, in
this process) fed upserts and deletions throughout; after every round a drain and the checker
(tests/support/nemesis_checker.py). Prints per fault: rounds, lost, doubled, stale, recovery
(heal -> first commit) p50/max, how soon the input paused, and what `status` and the log said.

    .venv/bin/python bench/nemesis.py --rounds 40 --seed 1 --out bench/results/nemesis.json
    .venv/bin/python bench/nemesis.py --lake s3 --rounds 12 --seed 2 --out bench/results/nemesis_s3.json

Needs Go (Toxiproxy is built with `go install`) and Java (Kafka); starts its own Kafka, Redis
and Toxiproxy under a temporary folder (ports from --base) and stops them by pid. The faults
last as the issue says (Redis 10-20 s, a Kafka blackhole 40 s: past the 30 s session timeout);
--scale shortens them. The model is a random tiny BERT: the faults, not the encoder, are timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tests.helpers import make_settings  # noqa: E402
from tests.support.models import make_random_model  # noqa: E402
from tests.support.nemesis import NemesisServices, make_faults  # noqa: E402
from tests.support.nemesis_checker import FaultReport, overlapping, run_schedule  # noqa: E402


def schedule(faults: dict, rounds: int, seed: int, overlap: float) -> list:
    """Every fault once (shuffled), then random rounds; a share `overlap` of those are two faults
    of different services at once."""
    rng = random.Random(seed)
    names = list(faults)
    rng.shuffle(names)
    plan = [faults[n] for n in names]
    while len(plan) < rounds:
        first = faults[rng.choice(names)]
        others = [f for f in faults.values() if f.service != first.service]
        plan.append(overlapping(first, rng.choice(others)) if rng.random() < overlap else first)
    return plan


def summarize(reports: list[FaultReport]) -> list[dict]:
    rows: dict[str, dict] = {}
    for r in reports:
        row = rows.setdefault(r.fault, {"fault": r.fault, "rounds": 0, "lost": 0, "doubled": 0, "stale": 0, "dlq": 0,
                                        "recovery": [], "paused": [], "status_s": [], "status": r.status, "log": r.log,
                                        "tracebacks": 0, "max_in_flight": 0, "max_rss_mb": 0.0})
        row["rounds"] += 1
        for key in ("lost", "doubled", "stale", "dlq", "tracebacks"):
            row[key] += getattr(r, key)
        row["recovery"].append(r.recovery_s)
        if r.paused_after_s is not None:
            row["paused"].append(r.paused_after_s)
        if r.status_s is not None:
            row["status_s"].append(r.status_s)
        row["max_in_flight"] = max(row["max_in_flight"], r.max_in_flight)
        row["max_rss_mb"] = max(row["max_rss_mb"], getattr(r, "max_rss_mb", 0.0))
    out = []
    for row in rows.values():
        rec = [x for x in row.pop("recovery") if x is not None]
        paused, status_s = row.pop("paused"), row.pop("status_s")
        row.update(recovery_p50=round(statistics.median(rec), 2) if rec else None, recovery_max=max(rec, default=None),
                   paused_max=max(paused, default=None), status_max_s=max(status_s, default=None))
        out.append(row)
    return sorted(out, key=lambda r: r["fault"])


def print_table(rows: list[dict]) -> None:
    table = Table(title="nemesis: per fault")
    for col in ("fault", "rounds", "lost", "doubled", "stale", "recovery p50/max s", "paused after s",
                "status (s): what the operator saw"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["fault"], str(r["rounds"]), str(r["lost"]), str(r["doubled"]), str(r["stale"]),
                      f"{r['recovery_p50']} / {r['recovery_max']}", str(r["paused_max"] or "-"),
                      f"({r['status_max_s']}) {r['status'][:140]}")
    Console(width=200).print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scale", type=float, default=1.0, help="fault durations times this")
    ap.add_argument("--overlap", type=float, default=0.3, help="share of random rounds with two faults at once")
    ap.add_argument("--rate", type=float, default=30.0, help="documents a second during the faults")
    ap.add_argument("--base", type=int, default=18400, help="the first of 10 ports for Kafka, Redis, Toxiproxy, s3proxy")
    ap.add_argument("--lake", choices=("disk", "s3"), default="disk",
                    help="the lake on a small disk of its own (the disk fault; needs root to mount a tmpfs) or on "
                         "a private s3proxy behind Toxiproxy (the S3 faults)")
    ap.add_argument("--out", help="write the rounds and the summary as JSON here")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the services (the finally below) on a kill
    work = Path(tempfile.mkdtemp(prefix="nemesis-"))
    services = NemesisServices(work / "run", base=args.base, lake=args.lake).start()
    if services.no_small_disk:
        print(services.no_small_disk)
    try:
        unique = f"nem{int(time.time())}"
        settings = make_settings(f"localhost:{services.kafka_port}", f"redis://127.0.0.1:{services.redis_port}/0",
                                 make_random_model(work / "tiny-bert"), work, unique,
                                 kafka={"session_timeout_ms": 30_000, "commit_interval_ms": 1000,
                                        "metadata_max_age_ms": 30_000})  # the product's defaults
        worker_settings, checker = services.settings_pair(settings)
        plan = schedule(make_faults(services, args.scale), args.rounds, args.seed, args.overlap)
        started = time.monotonic()

        def show(r: FaultReport) -> None:
            print(f"[{time.monotonic() - started:6.0f} s] {r.fault}: {r.duration_s} s, paused {r.paused_after_s}, "
                  f"recovery {r.recovery_s} s, lost/doubled/stale {r.lost}/{r.doubled}/{r.stale}, "
                  f"status ({r.status_s} s) {r.status[:90]!r}", flush=True)

        reports, end = run_schedule(plan, worker_settings, checker, "tiny-bert", seed=args.seed, rate=args.rate,
                                    on_report=show)
    finally:
        services.stop()
    rows = summarize(reports)
    print_table(rows)
    print(f"end state after {len(reports)} rounds: {end}")
    if args.out:
        Path(args.out).write_text(json.dumps({
            "machine": f"{platform.processor() or platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "date": time.strftime("%Y-%m-%d"), "seed": args.seed, "scale": args.scale, "lake": args.lake,
            "rounds": len(reports),
            "end": end, "summary": rows, "reports": [r.__dict__ for r in reports]}, indent=1, ensure_ascii=False))
    bad = end["lost"] or end["doubled"] or end["stale"] or end["dlq"] or not end["worker_survived"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
