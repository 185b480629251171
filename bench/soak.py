"""Soak: a steady stream for N minutes through one worker actor (tiny model); throughput over time
and the worker's resident memory at start and end. Needs `make up`.

    .venv/bin/python bench/soak.py --minutes 10 --rate 150
Prints one JSON object: per 30-second window the documents produced and committed and the
actor's RSS; `rss_growth` compares the end with the first sample after warm-up (target < 10 %).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=150.0, help="documents per second")
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()

    import psutil
    import ray
    from encoder import _cpu_name
    from kafka import KafkaProducer
    from stream import CommitWatcher, cleanup

    from pipelines.config import load_settings
    from pipelines.ops.produce import ensure_topic
    from pipelines.stream.supervisor import StreamSupervisor
    from tests.support.models import make_random_model
    from workers import logs

    logs.configure("WARNING")
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="embedworker-soak-"))
    model = str(make_random_model(Path(tempfile.gettempdir()) / "embedworker-bench-tiny"))
    settings = load_settings(None, {
        "kafka": {"topic": f"soak-{tag}", "group_id": f"soak-{tag}"}, "model": {"name": model},
        "redis": {"key_prefix": f"soak{tag}"}, "parquet": {"path": str(tmp / "parquet"), "max_seconds": 10},
        "workers": {"num_gpus": 0, "num_cpus": 1}, "logging": {"level": "WARNING", "summary_interval_s": 3600}})
    ensure_topic(settings, settings.kafka.topic, 3)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    actor = psutil.Process(ray.get(supervisor.actors[0].pid.remote()))
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, linger_ms=5)
    stop = threading.Event()
    produced = [0]

    def produce():
        start, i = time.time(), 0
        while not stop.is_set():
            time.sleep(max(0.0, start + i / args.rate - time.time()))
            doc_id = f"s{i % 50000}"  # ids repeat: updates, as a news feed's corrections do
            producer.send(settings.kafka.topic, key=doc_id.encode(), value=json.dumps(
                {"id": doc_id, "title": f"Update {i}", "text": f"soak test document {i} " * (1 + i % 20)}).encode())
            i += 1
            produced[0] = i

    sup_thread = threading.Thread(target=lambda: supervisor.supervise(poll_s=1.0), daemon=True)
    sup_thread.start()
    prod_thread = threading.Thread(target=produce, daemon=True)
    prod_thread.start()
    windows, t0 = [], time.time()
    last_committed = 0
    try:
        while time.time() - t0 < args.minutes * 60:
            time.sleep(args.window)
            watcher = CommitWatcher(settings)
            committed = sum(watcher.consumer.committed(tp) or 0 for tp in watcher.tps)
            watcher.close()
            windows.append({"t_s": round(time.time() - t0), "produced": produced[0], "committed": committed,
                            "committed_docs_s": round((committed - last_committed) / args.window, 1),
                            "rss_mb": round(actor.memory_info().rss / 1e6, 1)})
            last_committed = committed
            print(json.dumps(windows[-1]), flush=True)
    finally:
        stop.set()
        prod_thread.join(10)
        producer.flush()
        producer.close()
        supervisor.request_stop()
        sup_thread.join(120)
        cleanup(settings)
    start_rss = windows[min(1, len(windows) - 1)]["rss_mb"]  # after the first window: warmed up
    res = {"bench": "soak", "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d"), "minutes": args.minutes,
           "rate_docs_s": args.rate, "windows": windows, "rss_start_mb": start_rss, "rss_end_mb": windows[-1]["rss_mb"],
           "rss_growth": round(windows[-1]["rss_mb"] / start_rss - 1, 4),
           "mean_committed_docs_s": round(windows[-1]["committed"] / (windows[-1]["t_s"] or 1), 1)}
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
