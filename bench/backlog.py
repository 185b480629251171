"""A slow replica with a backlog, timed with a real model (not a paced fake): needs `make up`.

The setting of issue 31: a 6-partition topic with a backlog of 3,000 news documents (the
anchors' news mix), `workers.autoscale {min 1, max 3}`, a real 4-layer, 384-wide BERT (random
weights, the anchors' stand-in tokenizer) on the CPU with `torch_threads 1` (~20 docs/s a
replica here), Redis and the lake (`parquet.max_seconds` 1). Measured, from the moment the first
replica is set up (its model loaded):

- first write: the first vector in Redis, and the first commit;
- commits during the backlog: the longest time between two advances of the group's committed
  offsets while lag remains;
- autoscaling: when the driver first asks for more than one replica;
- steady load (after the backlog): documents produced at `--rate`/s for `--steady-s`; for each,
  produce-to-commit latency (a commit covers it only once every sink holds it durably), p50/p99;
- a kill -9 during a backlog (one replica, no autoscaling): the work it loses, i.e. records it
  had polled but not committed (what the next owner polls again), against its in-flight bound.

    .venv/bin/python bench/backlog.py [--docs 3000] [--rate 8] [--steady-s 60] [--json out.json]
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

from mixes import docs as mix_docs  # noqa: E402
from mixes import stand_in_tokenizer  # noqa: E402
from stream import cleanup, settings_for  # noqa: E402

PARTITIONS = 6


def model_dir(cache: Path) -> Path:
    from tests.support.models import make_random_model

    return make_random_model(cache / "bert-4x384", shape="four-layer", tokenizer_json=stand_in_tokenizer())


def produce(settings, texts: list[str], tag: str, rate: float | None = None) -> list[tuple[int, int, float]]:
    """Send documents (at `rate`/s, or all at once); returns (partition, offset, sent at) of each."""
    from kafka import KafkaProducer

    from pipelines.ops.produce import ensure_topic

    ensure_topic(settings, settings.kafka.topic, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=2)
    futures, start = [], time.monotonic()
    for i, text in enumerate(texts):
        if rate:
            time.sleep(max(0.0, start + i / rate - time.monotonic()))
        doc = {"id": f"{tag}-{i}", "title": f"t{i}", "text": text}
        futures.append((producer.send(settings.kafka.topic, key=doc["id"].encode(),
                                      value=json.dumps(doc, ensure_ascii=False).encode()), time.time()))
    producer.flush()
    out = [(f.get().partition, f.get().offset, at) for f, at in futures]
    producer.close()
    return out


class Watch:
    """Samples the group's committed offsets, Redis' vector count and the driver's replica count
    every `period` seconds, in a thread, with timestamps."""

    def __init__(self, settings, supervisor, period: float = 0.1):
        from workers.kafka.clients import new_admin
        from workers.sinks.redis_client import connect

        self.settings, self.supervisor, self.period = settings, supervisor, period
        self.admin = new_admin(settings.kafka, "bench")
        self.redis = connect(settings.redis, settings.redis.url)
        self.samples: list[tuple[float, dict[int, int], int, int]] = []  # (wall, committed, vectors, target)
        self.running: list[int] = []  # replicas running (set up or being set up) at each sample
        self.rebalancing: list[float] = []  # when the group was seen rebalancing
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from workers.kafka.offsets import committed_offsets

        k = self.settings.kafka
        while not self._stop.is_set():
            if len(self.samples) % 5 == 0:  # the group's state: no member commits while it rebalances
                described = self.admin.describe_groups([k.group_id]).get(k.group_id) or {}
                if described.get("group_state") != "Stable":
                    self.rebalancing.append(time.time())
            committed = committed_offsets(self.admin, k.group_id, k.topic)
            keys = [key for key in self.redis.scan_iter(match=f"{self.settings.redis.key_prefix}:*")
                    if self.redis.type(key) == b"vectorset"]
            vectors = sum(int(self.redis.execute_command("VCARD", key)) for key in keys)
            self.samples.append((time.time(), committed, vectors, self.supervisor.target))
            self.running.append(self.supervisor.running)
            time.sleep(self.period)

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.admin.close()
        self.redis.close()

    def committed_at(self, partition: int, offset: int) -> float | None:
        """When the commit first covered this record."""
        return next((at for at, c, _, _ in self.samples if c.get(partition, 0) > offset), None)


def backlog_run(model: str, texts: list[str], tmp: Path, steady_rate: float, steady_s: float,
                lake_roll_s: float = 1.0) -> dict:
    from pipelines.stream.supervisor import StreamSupervisor

    tag = uuid.uuid4().hex[:8]
    settings = settings_for(model, tmp, tag, model={"torch_threads": 1},
                            parquet={"max_seconds": lake_roll_s},
                            kafka={"commit_interval_ms": 1000},
                            workers={"num_cpus": 1, "autoscale": {"enabled": True, "min_replicas": 1,
                                                                  "max_replicas": 3}},
                            ray={"num_cpus": 3})
    produce(settings, texts, tag)
    supervisor = StreamSupervisor(settings)
    supervisor.start()  # returns once the replica has loaded the model and connected
    t0 = time.time()
    watch = Watch(settings, supervisor)
    thread = threading.Thread(target=lambda: supervisor.supervise(poll_s=0.2), daemon=True)
    thread.start()
    try:
        while not (watch.samples and sum(watch.samples[-1][1].values()) >= len(texts)):
            if time.time() - t0 > 1800:
                raise TimeoutError("the backlog was not drained in 30 min")
            time.sleep(0.5)
        drained = time.time()
        first_vector = next(at for at, _, v, _ in watch.samples if v > 0)
        first_commit = next(at for at, c, _, _ in watch.samples if sum(c.values()) > 0)
        scaled = next((at for at, _, _, target in watch.samples if target > 1), None)
        advances = [at for (at, c, _, _), (_, prev, _, _) in zip(watch.samples[1:], watch.samples)
                    if sum(c.values()) > sum(prev.values())]
        gaps = [(b - a, a) for a, b in zip(advances, advances[1:])]  # after the first commit (first_commit_s)
        # a replica added or removed rebalances the group: no member may commit until it ends
        changes = [at for (at, *_), n, m in zip(watch.samples[1:], watch.running[1:], watch.running) if n != m]
        steady_gaps = [g for g, at in gaps if not any(at - 1.0 <= r <= at + g + 1.0 for r in watch.rebalancing)]
        long_gaps = [(round(at - t0, 1), round(g, 1)) for g, at in gaps if g > 2.5]
        # the scale-up: from the first replica added to the end of the rebalances that followed
        scale_up = (changes[0], max((r for r in watch.rebalancing if r < changes[0] + 60), default=changes[0]) + 2.0) \
            if changes else None
        settled = [g for g, at in gaps if scale_up is None or at + g < scale_up[0] or at > scale_up[1]]
        steady = produce(settings, mix_docs("news", int(steady_rate * steady_s), seed=9), f"{tag}s", steady_rate)
        deadline = time.time() + 120
        latencies = []
        while time.time() < deadline:
            latencies = [c - at for p, o, at in steady if (c := watch.committed_at(p, o)) is not None]
            if len(latencies) == len(steady):
                break
            time.sleep(0.5)
        stats = supervisor.stats()
    finally:
        supervisor.request_stop()
        thread.join(180)
        watch.close()
        cleanup(settings)
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    batch_s = [round(s.get("encode_busy_s", 0) / max(1, s.get("batches", 1)), 2) for s in stats if "batches" in s]
    return {"backlog_docs": len(texts), "lake_roll_s": lake_roll_s, "first_vector_s": round(first_vector - t0, 2),
            "first_commit_s": round(first_commit - t0, 2), "longest_commit_gap_s": round(max(gaps)[0], 2),
            "longest_commit_gap_at_s": round(max(gaps)[1] - t0, 1), "replica_changes_at_s": [round(c - t0, 1) for c in changes],
            "longest_commit_gap_outside_rebalances_s": round(max(steady_gaps, default=0.0), 2),
            "gaps_over_2_5_s_at": long_gaps, "rebalancing_seen_at_s": sorted({round(r - t0) for r in watch.rebalancing}),
            "scale_up_window_s": None if scale_up is None else [round(x - t0, 1) for x in scale_up],
            "longest_commit_gap_outside_the_scale_up_s": round(max(settled, default=0.0), 2),
            "commit_advances": len(advances), "asked_for_more_replicas_s": None if scaled is None else round(scaled - t0, 1),
            "backlog_drained_s": round(drained - t0, 1), "steady_rate": steady_rate, "steady_docs": len(steady),
            "steady_committed": len(latencies), "produce_to_commit_p50_s": pct(0.5), "produce_to_commit_p99_s": pct(0.99),
            "seconds_per_batch": batch_s, "encode_docs_per_s": [s.get("encode_docs_per_s") for s in stats],
            "in_flight_limit": [s.get("in_flight_limit") for s in stats]}


def kill_run(model: str, texts: list[str], tmp: Path, kill_after_s: float) -> dict:
    """One replica, a backlog, kill -9 after `kill_after_s`: what it held uncommitted is lost work."""
    import ray

    from pipelines.stream.supervisor import StreamSupervisor

    tag = uuid.uuid4().hex[:8]
    settings = settings_for(model, tmp, tag, model={"torch_threads": 1}, parquet={"max_seconds": 1.0},
                            workers={"num_cpus": 1, "replicas": 1}, ray={"num_cpus": 3})
    produce(settings, texts, tag)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    watch = Watch(settings, supervisor)
    thread = threading.Thread(target=lambda: supervisor.supervise(poll_s=0.2), daemon=True)
    thread.start()
    try:
        time.sleep(kill_after_s)
        actor = supervisor.actors[0]
        before = ray.get(actor.stats.remote(), timeout=10)
        pid = ray.get(actor.pid.remote(), timeout=10)
        committed = sum(watch.samples[-1][1].values())
        os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        while sum(watch.samples[-1][1].values()) < len(texts) and time.time() - killed_at < 900:
            time.sleep(0.5)
        recovered = sum(watch.samples[-1][1].values()) >= len(texts)
    finally:
        supervisor.request_stop()
        thread.join(180)
        watch.close()
        cleanup(settings)
    return {"killed_after_s": kill_after_s, "consumed_before_kill": before.get("consumed"),
            "committed_before_kill": committed, "work_lost_docs": before.get("consumed", 0) - committed,
            "in_flight_limit": before.get("in_flight_limit"), "in_flight_at_kill": before.get("in_flight"),
            "all_committed_after_restart": recovered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=8.0, help="steady load after the backlog, documents per second")
    ap.add_argument("--steady-s", type=float, default=60.0)
    ap.add_argument("--kill-after-s", type=float, default=30.0)
    ap.add_argument("--lake-roll-s", type=float, default=1.0, help="parquet.max_seconds (how often the lake rolls)")
    ap.add_argument("--only", choices=["backlog", "kill"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cache = Path(os.environ.get("EMBEDWORKER_CACHE_DIR", Path.home() / ".cache" / "embedworker")) / "bench"
    model = str(model_dir(cache))
    texts = mix_docs("news", args.docs)
    out: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "model": "BERT 4 layers x 384, random weights, stand-in tokenizer, torch_threads 1"}
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "backlog"):
            out["backlog"] = backlog_run(model, texts, Path(tmp), args.rate, args.steady_s, args.lake_roll_s)
            print(json.dumps(out["backlog"]), flush=True)
        if args.only in (None, "kill"):
            import ray

            ray.shutdown()
            out["kill"] = kill_run(model, texts, Path(tmp), args.kill_after_s)
            print(json.dumps(out["kill"]), flush=True)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
