"""Host path: CPU time per document of everything around the model forward (needs `make up`).

The real streaming pipeline (Kafka -> EmbeddingWorker actor on Ray -> Redis vector set + Parquet
-> commits) with the forward replaced by a stub that costs O(1) per document (a deterministic
unit vector; bench-only: a subclass of the worker, nothing in the product changes). CPU seconds
(user + system, from /proc) of the worker actor, redis-server and the Kafka broker are read when
the actor has loaded its model and connected (all documents already in the topic) and again when
every offset is committed, so start-up is excluded and every document's whole path is counted
(a window inside the run would miss work done ahead of it: the worker tokenizes up to
`max_in_flight` documents in advance). Single-thread tokenization of the same documents is
measured in this process (RAYON_NUM_THREADS=1). Without --json it
also prints where the worker's CPU goes, per thread (polling, tokenize, encode, sinks, ...).

    .venv/bin/python bench/hostpath.py --mix short --n 20000
    .venv/bin/python bench/hostpath.py --mix news --n 6000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # tokenize_alone: one thread (set before tokenizers loads)

from workers.stream.worker import EmbeddingWorker  # noqa: E402

H100_DOCS_S = {"news": 10_900, "short": 55_000}  # measured forward rates, ../shared/bench/results
TICK = os.sysconf("SC_CLK_TCK")
TABLE = 16_384


class ThreadedWorker(EmbeddingWorker):
    """The real worker, unchanged, with only the thread listing the profile needs."""

    def threads(self) -> dict[int, str]:
        """native thread id -> Python thread name (for the per-stage CPU profile)."""
        return {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}


class StubForwardWorker(ThreadedWorker):
    """The real worker with the model forward replaced by an O(1)-per-document stub (the
    padding of each batch, host work on a GPU box too, still runs)."""

    def setup(self) -> None:
        import numpy as np

        super().setup()
        # 16,384 distinct unit vectors around 64 centres, as the anchors' Redis benchmark makes
        # them (../shared/bench/redis_vadd_bench.py): Redis' insert cost depends on how the
        # vectors spread (a few hundred distinct ones are far cheaper, uniform noise far dearer).
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((64, self.encoder.dim)).astype(np.float32)
        table = centres[rng.integers(0, 64, TABLE)] + 0.35 * rng.standard_normal((TABLE, self.encoder.dim)).astype(np.float32)
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        weights = rng.integers(1, 2**31, size=4096)

        def launch(ids, padded_len):
            input_ids, mask = self.encoder.pad(ids, padded_len)  # the host's part of a real launch
            width = min(padded_len, 16)
            keys = (input_ids[:, :width] * weights[:width]).sum(axis=1) + mask.sum(axis=1)
            return table[keys % TABLE]

        self.encoder.launch = launch
        self.encoder.collect = lambda handle: handle


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """Every process below `pid` (tokenizer processes of the worker, for instance)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                for child in f.read().split():
                    out += [int(child), *children(int(child))]
    except OSError:
        pass
    return out


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of `pid` itself and of the processes below it."""
    kids = 0.0
    for child in children(pid):
        try:
            kids += proc_cpu(child)
        except OSError:
            pass
    return proc_cpu(pid), kids


def thread_cpu(pid: int) -> dict[int, float]:
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
        except OSError:
            pass
    return out


def service_pid(name: str) -> int | None:
    for pidfile in sorted((ROOT / ".run").glob(f"{name}-*/{name}.pid")):
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            continue
    return None


def stage_of(name: str) -> str:
    for prefix, stage in (("tokenize", "tokenize"), ("encode", "encode (batching, records)"),
                          ("sinks", "sinks (Redis, Parquet buffers, ledger)"), ("parquet", "parquet writer"),
                          ("kafka", "kafka client IO"), ("ThreadPoolExecutor", "polling (fetch, parse, ledger)")):
        if name.startswith(prefix):
            return stage
    return name


def tokenize_alone(model_dir: Path, texts: list[str]) -> float:
    """CPU seconds of one thread tokenizing `texts` as the worker does (prefix, truncation)."""
    from workers.encoding.encoder import Encoder

    enc = Encoder.load(str(model_dir), device="cpu", tokenizer_threads=1)
    window = 4096
    enc.tokenizer.tokenize(texts[:64], enc.document_prefix)
    t0 = time.process_time()
    for i in range(0, len(texts), window):
        enc.tokenizer.tokenize(texts[i:i + window], enc.document_prefix)
    spent = time.process_time() - t0
    enc.close()
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mix", default="short", choices=["news", "short"])
    ap.add_argument("--n", type=int, default=None, help="documents (default 20000 short, 6000 news)")
    ap.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the anchors' stand-in)")
    ap.add_argument("--tokenizer-threads", type=int, default=1)
    ap.add_argument("--tokenizer-processes", type=int, default=0, help="model.tokenizer_processes (0: threads)")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--ef", type=int, default=100, help="redis.ef (the default; runs before 2026-11-30 used 200)")
    ap.add_argument("--quantization", default=None, choices=["q8", "noquant", "bin"],
                    help="redis.quantization (default: a new index's, noquant; runs before 2026-11-30 were q8)")
    ap.add_argument("--cas", action="store_true", help="redis.cas: VADD ... CAS")
    ap.add_argument("--forward", default="stub", choices=["stub", "zero-layer"],
                    help="stub: O(1) per document; zero-layer: the real encoder on the zero-layer BERT (as `embedworker run`)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shared", default=None)
    args = ap.parse_args()
    n = args.n or (20_000 if args.mix == "short" else 6_000)

    from encoder import _cpu_name
    from mixes import docs as mix_docs
    from mixes import stand_in_tokenizer
    from stream import CommitWatcher, cleanup, produce, settings_for

    from pipelines.stream.supervisor import StreamSupervisor
    from tests.support.models import make_random_model
    from workers import logs

    logs.configure("WARNING")
    tokenizer_json = Path(args.tokenizer) if args.tokenizer else stand_in_tokenizer(args.shared)
    model_dir = make_random_model(Path(tempfile.gettempdir()) / f"embedworker-hostpath-{abs(hash(str(tokenizer_json)))}",
                                  shape="zero-layer", tokenizer_json=tokenizer_json)
    texts = mix_docs(args.mix, n)
    docs = [{"id": f"h{i}", "text": t, "lang": "ko", "source": "bench"} for i, t in enumerate(texts)]
    tok_cpu = tokenize_alone(model_dir, texts)

    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="embedworker-hostpath-"))
    settings = settings_for(str(model_dir), tmp, tag,
                            model={"tokenizer_threads": args.tokenizer_threads, "torch_threads": 1,
                                   "tokenizer_processes": args.tokenizer_processes},
                            redis={"shards": args.shards, "ef": args.ef, "cas": args.cas,
                                   "quantization": args.quantization},
                            workers={"num_cpus": 1, "max_in_flight": 8192}, ray={"num_cpus": 2})
    produce(settings, docs)
    watcher = CommitWatcher(settings)
    supervisor = StreamSupervisor(settings, worker_class=StubForwardWorker if args.forward == "stub" else ThreadedWorker)
    supervisor.start()  # returns when setup() is done; the run starts now
    import ray

    actor = supervisor.actors[0]
    pid = ray.get(actor.pid.remote())
    pids = {"redis": service_pid("redis"), "kafka": service_pid("kafka")}

    def committed() -> int:
        return sum(watcher.consumer.committed(tp) or 0 for tp in watcher.tps)

    def snapshot():
        return (time.monotonic(), committed(), tree_cpu(pid), thread_cpu(pid),
                {k: proc_cpu(v) if v else 0.0 for k, v in pids.items()})

    try:
        first = snapshot()
        while committed() < n:
            time.sleep(0.02)
        second = snapshot()
        names = ray.get(actor.threads.remote())
    finally:
        watcher.close()
        supervisor.stop()
        cleanup(settings)

    docs_window = second[1] - first[1]
    seconds = second[0] - first[0]
    own_ms = (second[2][0] - first[2][0]) / docs_window * 1000
    kids_ms = (second[2][1] - first[2][1]) / docs_window * 1000  # tokenizer processes (started on first use)
    worker_ms = own_ms + kids_ms
    tok_ms = tok_cpu / n * 1000
    redis_ms = (second[4]["redis"] - first[4]["redis"]) / docs_window * 1000
    kafka_ms = (second[4]["kafka"] - first[4]["kafka"]) / docs_window * 1000
    rate = H100_DOCS_S[args.mix]
    res = {"bench": "hostpath", "machine": _cpu_name(), "date": time.strftime("%Y-%m-%d"), "mix": args.mix, "n": n,
           "tokenizer": str(tokenizer_json.name), "tokenizer_threads": args.tokenizer_threads,
           "tokenizer_processes": args.tokenizer_processes, "shards": args.shards,
           "ef": args.ef, "quantization": args.quantization or "noquant", "cas": args.cas, "forward": args.forward,
           "window_docs": docs_window, "docs_s": round(docs_window / seconds, 1),
           "worker_cpu_ms_per_doc": round(worker_ms, 4), "tokenize_cpu_ms_per_doc": round(tok_ms, 4),
           "overhead_cpu_ms_per_doc": round(worker_ms - tok_ms, 4), "redis_cpu_ms_per_doc": round(redis_ms, 4),
           "kafka_cpu_ms_per_doc": round(kafka_ms, 4),
           "cores_per_h100": {"at_docs_s": rate, "worker": round(worker_ms * rate / 1000, 1),
                              "redis": round(redis_ms * rate / 1000, 1)}}
    stages: dict[str, float] = {}
    for tid, cpu in second[3].items():
        stage = stage_of(names.get(tid, "ray runtime / other"))
        stages[stage] = stages.get(stage, 0.0) + (cpu - first[3].get(tid, 0.0)) / docs_window * 1000
    if kids_ms:
        stages["tokenizer processes"] = kids_ms
    res["profile_cpu_ms_per_doc"] = {k: round(v, 4) for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v > 0}
    if args.json:
        print(json.dumps(res))
        return
    print(json.dumps({k: v for k, v in res.items() if k != "profile_cpu_ms_per_doc"}, indent=1))
    print("where the worker's CPU goes (ms per document, per thread):")
    for stage, ms in res["profile_cpu_ms_per_doc"].items():
        print(f"  {stage:45s} {ms:8.4f}")


if __name__ == "__main__":
    main()
