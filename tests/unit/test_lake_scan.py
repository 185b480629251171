"""An index's newest records read from a real (local) Delta table a batch at a time: the same rows
as the whole-table computation, never more than one batch of the heavy columns at once; restore
and the backfill's lake export go through it (before, both loaded the whole index)."""

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from pipelines.maintenance import lake_scan
from workers.settings import ParquetSettings
from workers.sinks.base import SinkRecord
from workers.sinks.lake import DeltaLakeSink

DIM = 4
T0 = datetime(2026, 11, 28, 9, tzinfo=UTC)


def write_history(root, n: int = 400, seed: int = 5) -> dict[str, tuple]:
    """Upserts and deletions of 60 ids over two partitions, in several commits; returns each id's
    newest record as (partition, offset, op)."""
    rng = random.Random(seed)
    sink = DeltaLakeSink(ParquetSettings(path=str(root), max_rows_per_file=37), "idx", "m", None, DIM, "passage: ")
    sink.setup()
    sink.assign([("news", 0), ("news", 1)])
    offsets, newest = {0: 0, 1: 0}, {}
    for i in range(n):
        doc = f"d{rng.randrange(60)}"
        p = int(doc[1:]) % 2
        op = "delete" if rng.random() < 0.15 else "upsert"
        rec = SinkRecord(id=doc, op=op, topic="news", partition=p, offset=offsets[p],
                         vector=None if op == "delete" else np.full(DIM, 0.5, np.float32), text=f"text {i}",
                         ingested_at=T0 + timedelta(seconds=i))
        sink.write([rec])
        newest[doc] = (p, offsets[p], op)
        offsets[p] += 1
        if i % 50 == 49:
            sink.flush(0.0, force=True)
    sink.close()
    return newest


def test_the_newest_record_of_every_id_comes_a_batch_at_a_time(tmp_path, monkeypatch):
    newest = write_history(tmp_path)
    monkeypatch.setattr(lake_scan, "BATCH_ROWS", 16)
    from deltalake import DeltaTable

    dataset = DeltaTable(str(tmp_path)).to_pyarrow_dataset()
    scan = lake_scan.scan_newest(dataset, "idx")
    assert scan.rows_in_lake == 400 and scan.keys.num_rows == len(newest)
    seen = {}
    for batch in scan.batches(["id", "kafka_partition", "kafka_offset", "op", "embedding", "text"]):
        assert batch.num_rows <= 16
        for r in batch.to_pylist():
            assert r["id"] not in seen
            seen[r["id"]] = (r["kafka_partition"], r["kafka_offset"], r["op"])
            assert (r["embedding"] is None) == (r["op"] == "delete")
    assert seen == newest


class BatchesOnly:
    """A dataset that can be read a batch at a time only: reading it whole fails the test."""

    def __init__(self, dataset):
        self._dataset = dataset
        self.schema = dataset.schema
        self.largest = 0

    def to_batches(self, **kwargs):
        for batch in self._dataset.to_batches(**kwargs):
            self.largest = max(self.largest, batch.num_rows)
            yield batch

    def to_table(self, *args, **kwargs):
        raise AssertionError("the whole index was loaded into memory")


def test_the_lake_export_reads_the_index_a_batch_at_a_time(tmp_path, monkeypatch):
    """The backfill's lake input (as restore) reads the heavy columns only in batches."""
    import fsspec
    from deltalake import DeltaTable

    from pipelines.batch.lake_input import _export

    newest = write_history(tmp_path, n=120)
    monkeypatch.setattr(lake_scan, "BATCH_ROWS", 8)
    dataset = BatchesOnly(DeltaTable(str(tmp_path)).to_pyarrow_dataset())
    documents = _export(dataset, "idx", fsspec.filesystem("file"), str(tmp_path / "export"))
    assert documents == len(newest)
    assert 0 < dataset.largest <= 8 * 16  # the keys pass reads 16 batches' worth of its small columns at once


def test_an_empty_index_scans_to_nothing(tmp_path):
    write_history(tmp_path, n=10)
    from deltalake import DeltaTable

    scan = lake_scan.scan_newest(DeltaTable(str(tmp_path)).to_pyarrow_dataset(), "other")
    assert scan.rows_in_lake == 0 and list(scan.batches(["id"])) == []
    assert isinstance(scan.keys, pa.Table)
