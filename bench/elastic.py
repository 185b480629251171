"""Elastic replicas (needs `make up`: Kafka on :9092, Redis on :6379). Two measurements, each
compared within this run:

1. Recovery: a replica of two killed -9 under a steady input (6 partitions): seconds until its
   process is back, and until its partitions are consumed again, with static membership (the
   default, `kafka.session_timeout_ms` 30 s) and without (as before: dynamic members, 10 s).
2. A backlog drained by one fixed replica, then by the autoscaler (min 1, max 3): the time from
   the first replica ready to everything committed, and the ratio. Replicas are paced at 50
   docs/s each (tests.support.workers.PacedWorker, sleeping as a loaded GPU would), so the
   ratio says what scaling buys when the encoder is the bottleneck, not what 2 CPU cores do.

    .venv/bin/python bench/elastic.py [--docs 5000] [--kills 3] [--only recovery|backlog]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from stream import CommitWatcher, cleanup, produce, settings_for  # noqa: E402


def documents(n: int, tag: str) -> list[dict]:
    words = ["속보", "정부", "발표", "금리", "반도체", "market", "rates", "storm", "chip", "election"]
    return [{"id": f"{tag}-{i}", "text": " ".join(words[(i * 7 + j) % len(words)] for j in range(12))}
            for i in range(n)]


def supervised(settings, worker_class):
    from pipelines.stream.supervisor import StreamSupervisor

    supervisor = StreamSupervisor(settings, worker_class=worker_class)
    supervisor.start()
    thread = threading.Thread(target=lambda: supervisor.supervise(poll_s=0.2), daemon=True)
    thread.start()
    return supervisor, thread


def wait(predicate, timeout: float, step: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError("waited too long")


def recovery(model: str, tmp: Path, static: bool, kills: int) -> dict:
    import ray

    tag = f"rec-{'static' if static else 'dynamic'}-{uuid.uuid4().hex[:6]}"
    settings = settings_for(model, tmp, tag, kafka={"static_membership": static,
                                                    "session_timeout_ms": 30000 if static else 10000},
                            workers={"replicas": 2, "num_cpus": 0.5}, ray={"num_cpus": 4})
    from pipelines.ops.produce import ensure_topic
    from workers.stream.worker import EmbeddingWorker

    ensure_topic(settings, settings.kafka.topic, 6)
    supervisor, thread = supervised(settings, EmbeddingWorker)
    stop = threading.Event()

    def trickle():  # 40 docs/s over all partitions
        i = 0
        while not stop.is_set():
            produce(settings, documents(4, f"{tag}-t{i}"))
            i += 1
            time.sleep(0.1)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    back, consuming = [], []
    try:
        time.sleep(8)
        for _ in range(kills):
            victim = supervisor.actors[0]
            pid = ray.get(victim.pid.remote(), timeout=30)
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            restarted = wait(lambda v=victim, p=pid: _pid(v) not in (None, p), 120)
            consumed = wait(lambda v=victim: _consumed(v) > 0, 120)
            back.append(round(restarted - killed, 1))
            consuming.append(round(consumed - killed, 1))
            time.sleep(5)
    finally:
        stop.set()
        feeder.join()
        supervisor.request_stop()
        thread.join(120)
        cleanup(settings)
    return {"static_membership": static, "session_timeout_ms": settings.kafka.session_timeout_ms,
            "process_back_s": back, "partitions_consumed_again_s": consuming}


def _pid(actor):
    import ray

    try:
        return ray.get(actor.pid.remote(), timeout=2)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None


def _consumed(actor) -> int:
    import ray

    try:
        return ray.get(actor.stats.remote(), timeout=2).get("consumed", 0)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return 0


def backlog(model: str, tmp: Path, n: int, autoscale: bool) -> dict:
    from tests.support.workers import PacedWorker

    tag = f"backlog-{'auto' if autoscale else 'one'}-{uuid.uuid4().hex[:6]}"
    scale = {"enabled": autoscale, "min_replicas": 1, "max_replicas": 3, "catch_up_s": 10, "scale_down_after_s": 30,
             "cooldown_s": 2, "interval_s": 1}
    # batches of 32 paced texts take 0.64 s, as a GPU's batches are short next to the backlog
    settings = settings_for(model, tmp, tag, workers={"replicas": 1, "num_cpus": 0.5, "max_in_flight": 256,
                                                      "autoscale": scale}, ray={"num_cpus": 4},
                            batching={"max_batch_size": 32})
    from pipelines.ops.produce import ensure_topic

    ensure_topic(settings, settings.kafka.topic, 6)
    produce(settings, documents(n, tag))
    supervisor, thread = supervised(settings, PacedWorker)
    started = time.monotonic()
    watcher = CommitWatcher(settings)
    peak, timeline, last = 1, [], 0.0
    try:
        while not watcher.done():
            peak = max(peak, supervisor.running)
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                committed = sum(watcher.consumer.committed(tp) or 0 for tp in watcher.tps)
                timeline.append((round(last - started), supervisor.running, committed))
            time.sleep(0.2)
        seconds = time.monotonic() - started
    finally:
        watcher.close()
        supervisor.request_stop()
        thread.join(120)
        cleanup(settings)
    return {"autoscale": autoscale, "docs": n, "seconds": round(seconds, 1), "peak_replicas": peak,
            "last_change": supervisor.scaling.last_change, "timeline_s_replicas_committed": timeline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--only", choices=["recovery", "backlog"])
    args = parser.parse_args()
    import ray

    from pipelines.ray_session import quiet_local_ray_auth
    from tests.support.models import make_random_model

    quiet_local_ray_auth()
    ray.init(num_cpus=4, include_dashboard=False, namespace="embedworker-bench", configure_logging=False,
             log_to_driver=False)
    tmp = Path(tempfile.mkdtemp(prefix="embedworker-elastic-"))
    model = str(make_random_model(tmp / "tiny-bert"))
    out: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d")}
    if args.only != "backlog":
        out["recovery"] = [recovery(model, tmp, static, args.kills) for static in (False, True)]
    if args.only != "recovery":
        one, auto = backlog(model, tmp, args.docs, False), backlog(model, tmp, args.docs, True)
        out["backlog"] = {"one_replica": one, "autoscaled": auto, "speedup": round(one["seconds"] / auto["seconds"], 2)}
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
