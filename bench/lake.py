"""What the Parquet side costs as its history grows: a partition assignment (what the table holds
for 12 partitions) and `status` (files, rows, bytes per index), for the lake (`format: delta`)
and the older plain files (`format: files`), at 1k / 10k / 100k commits (files).

    python bench/lake.py                          # delta at 1k, 10k, 100k; files at 1k, 10k
    python bench/lake.py --delta 1000 --files 1000 --out bench/results/lake.json

The delta log is written as delta-rs writes it while streaming — per commit one data file (an
`add` with its row count) and the transaction of its source partition — directly as log entries
(writing 100,000 real commits would take hours here); delta-rs writes a checkpoint every 100
commits, so the table gets one at the last multiple of 100 and the commits after it stay JSON,
as on a live table. The data files themselves are not needed: both measurements read the log
only. The plain layout gets real (one-row) files, because its costs are listing and footers.
Prints one JSON object; each figure is the best of 3 runs, in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PARTITIONS = 12


def make_delta(path: Path, commits: int) -> None:
    from deltalake import DeltaTable

    from workers.sinks.lake import create_table, lake_schema

    create_table(str(path), lake_schema(384), None)
    log = path / "_delta_log"
    now = int(time.time() * 1000)
    checkpoint_at = (commits // 100) * 100

    def write(version: int) -> None:
        p = version % PARTITIONS
        offset = (version // PARTITIONS) * 500 + 499
        day = f"2026-{1 + (version // 20000) % 12:02d}-{1 + (version // 700) % 28:02d}"
        entries = [
            {"commitInfo": {"timestamp": now, "operation": "WRITE", "operationParameters": {"mode": "Append"}}},
            {"txn": {"appId": f"embedworker/v1/news/{p}", "version": offset, "lastUpdated": now}},
            {"add": {"path": f"index=v1/dt={day}/part-{version:06d}-{uuid.uuid4()}.parquet",
                     "partitionValues": {"index": "v1", "dt": day}, "size": 820_000, "modificationTime": now,
                     "dataChange": True, "stats": json.dumps({"numRecords": 500})}},
        ]
        (log / f"{version:020d}.json").write_text("\n".join(json.dumps(e) for e in entries) + "\n")

    for version in range(1, checkpoint_at + 1):
        write(version)
    if checkpoint_at:
        DeltaTable(str(path)).create_checkpoint()
    for version in range(checkpoint_at + 1, commits + 1):
        write(version)


def make_files(path: Path, files: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workers.sinks.parquet_files import file_name

    table = pa.table({"id": ["x"]})
    for n in range(files):
        p = n % PARTITIONS
        first = (n // PARTITIONS) * 500
        folder = path / "index=v1" / f"dt=2026-11-{1 + (n // 700) % 28:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / file_name("news", p, first, first + 499))


def best(fn, reps: int = 3) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(min(times), 4)


def measure(path: Path, fmt: str) -> dict:
    from pipelines.config import load_settings
    from pipelines.ops.status import parquet_status
    from workers.settings import ParquetSettings
    from workers.sinks.lake import new_parquet_sink

    settings = load_settings(None, {"parquet": {"path": str(path), "format": fmt}, "redis": {"index": "v1"},
                                    "kafka": {"topic": "news"}})
    partitions = [("news", p) for p in range(PARTITIONS)]

    def assign():
        sink = new_parquet_sink(ParquetSettings(path=str(path), format=fmt), "v1", "m", None, 384, "")
        sink.setup()
        sink.assign(partitions)
        held = sink.held_offsets()
        sink.close()
        assert all(v >= 0 for v in held.values()), held

    def status():
        report = parquet_status(settings, "news", list(range(PARTITIONS)))
        assert "error" not in report, report

    return {"assignment_s": best(assign), "status_s": best(status)}


def measure_restore(n: int, redis_url: str) -> dict:
    """Vectors per second of `embedworker restore` (n 384-dim documents, Q8, EF 200, one shard)."""
    import uuid as _uuid
    from datetime import UTC, datetime

    import numpy as np

    from pipelines.config import load_settings
    from pipelines.maintenance.restore import restore_index
    from workers.sinks.base import SinkRecord
    from workers.sinks.lake import DeltaLakeSink
    from workers.sinks.redis_client import connect

    folder = Path(tempfile.mkdtemp(prefix="embedworker-lake-restore-"))
    prefix = f"benchrestore{_uuid.uuid4().hex[:6]}"
    settings = load_settings(None, {"parquet": {"path": str(folder)}, "redis": {"url": redis_url, "index": "v1",
                                                                               "key_prefix": prefix},
                                    "model": {"name": "bench/model"}})
    try:
        sink = DeltaLakeSink(settings.parquet, "v1", "bench/model", None, 384, "passage: ")
        sink.setup()
        sink.assign([("news", 0)])
        rng = np.random.default_rng(0)
        now = datetime.now(UTC)
        for start in range(0, n, 5000):
            vecs = rng.standard_normal((5000, 384)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            sink.write([SinkRecord(id=f"d{start + i}", op="upsert", topic="news", partition=0, offset=start + i,
                                   vector=vecs[i], title=f"title {start + i}", lang="ko", ingested_at=now)
                        for i in range(min(5000, n - start))])
            sink.flush(0.0, force=True)
        sink.close()
        result = restore_index(settings)
        return {"vectors": result["vectors"], "seconds": result["seconds"], "vectors_per_s": result["vectors_per_s"],
                "quantization": settings.redis.quantization, "ef": settings.redis.ef}
    finally:
        client = connect(settings.redis, redis_url)
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delta", default="1000,10000,100000", help="commit counts for the lake")
    ap.add_argument("--files", default="1000,10000", help="file counts for the plain layout")
    ap.add_argument("--restore", type=int, default=0, help="also measure restore with this many vectors (needs Redis)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from encoder import _cpu_name

    res: dict = {"bench": "lake", "machine": _cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "partitions": PARTITIONS, "delta": {}, "files": {}}
    for fmt, counts, make in (("delta", args.delta, make_delta), ("files", args.files, make_files)):
        for n in [int(x) for x in counts.split(",") if x]:
            folder = Path(tempfile.mkdtemp(prefix=f"embedworker-lake-{fmt}-"))
            try:
                t0 = time.perf_counter()
                make(folder, n)
                made = time.perf_counter() - t0
                res[fmt][str(n)] = {**measure(folder, fmt), "made_in_s": round(made, 1)}
                print(fmt, n, res[fmt][str(n)], file=sys.stderr, flush=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    if args.restore:
        res["restore"] = measure_restore(args.restore, args.redis)
        print("restore", res["restore"], file=sys.stderr, flush=True)
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
