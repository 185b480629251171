"""ParquetSink against a temporary folder (no services): one complete copy per index, nothing
written twice within an index, files of the layout before index folders still count for the
model that wrote them, and the status report per index."""

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest

from pipelines.config import load_settings
from pipelines.ops.status import parquet_status
from tests.helpers import wait_until
from workers.errors import SinkBackpressureError
from workers.settings import ParquetSettings
from workers.sinks.base import SinkRecord
from workers.sinks.parquet import ParquetSink
from workers.sinks.parquet_files import index_of

DIM = 4
DAY = datetime(2026, 11, 28, 9, tzinfo=UTC)


def records(offsets, partition=0):
    return [SinkRecord(id=f"d{o}", op="upsert", topic="news", partition=partition, offset=o,
                       vector=np.full(DIM, 0.5, np.float32), title=f"title {o}", lang="ko", ingested_at=DAY)
            for o in offsets]


def run_sink(root: Path, index: str, offsets, model="org/model-a", partition=0) -> ParquetSink:
    sink = ParquetSink(ParquetSettings(path=str(root)), index, model, None, DIM, "passage: ")
    sink.setup()
    sink.assign([("news", partition)])
    sink.write(records(offsets, partition))
    sink.close()
    return sink


def table(root: Path, index: str | None = None):
    dataset = ds.dataset(str(root), format="parquet", partitioning="hive")
    return dataset.to_table(filter=None if index is None else ds.field("index") == index)


def test_each_index_gets_a_complete_copy_and_nothing_twice(tmp_path):
    assert run_sink(tmp_path, "v1", range(10)).rows_written == 10
    assert run_sink(tmp_path, "v2", range(10), model="org/model-b").rows_written == 10, "an upgrade writes a copy"
    assert run_sink(tmp_path, "v1", range(12)).rows_written == 2, "held offsets are per index"
    v1, v2 = table(tmp_path, "v1"), table(tmp_path, "v2")
    assert sorted(v1["kafka_offset"].to_pylist()) == list(range(12))
    assert sorted(v2["kafka_offset"].to_pylist()) == list(range(10))
    assert set(v2["model"].to_pylist()) == {"org/model-b"}
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files[0] == "index=v1/dt=2026-11-28/news-p00000-o0000000000000000000-0000000000000000009.parquet"
    assert {index_of(f) for f in files} == {"v1", "v2"}


def test_files_before_index_folders_count_for_their_model(tmp_path):
    run_sink(tmp_path, "old", range(6))
    (tmp_path / "dt=2026-11-28").mkdir()
    for f in (tmp_path / "index=old" / "dt=2026-11-28").iterdir():  # as the previous release laid it out
        f.rename(tmp_path / "dt=2026-11-28" / f.name)
    shutil.rmtree(tmp_path / "index=old")
    same_model = run_sink(tmp_path, "dragon", range(8))
    assert same_model.rows_written == 2, "an upgrade of embedworker writes nothing twice"
    other_model = run_sink(tmp_path, "v2", range(8), model="org/model-b")
    assert other_model.rows_written == 8
    everything = table(tmp_path)
    assert everything.num_rows == 16 and everything.filter(ds.field("index").is_null()).num_rows == 6


def test_an_unwritable_folder_is_backpressure_until_it_is_writable(tmp_path):
    sink = ParquetSink(ParquetSettings(path=str(tmp_path)), "v1", "m", None, DIM, "")
    sink.setup()
    sink.assign([("news", 0)])
    (tmp_path / "index=v1").write_text("a file where the folder belongs")
    sink.write(records(range(3)))
    with pytest.raises(SinkBackpressureError, match="cannot write Parquet file"):
        sink.flush(0.0, force=True, timeout=5)
    assert sink.durable_offsets() == {("news", 0): -1}, "nothing unwritten counts as durable"
    (tmp_path / "index=v1").unlink()
    wait_until(lambda: sink.durable_offsets() == {("news", 0): 2}, 15, interval=0.05,  # retried after retry_after_s
               message="the writer to retry by itself")
    sink.flush(0.0, force=True)
    assert sink.rows_written == 3
    sink.close()


def test_status_reports_each_index_and_the_offsets_of_its_own(tmp_path):
    run_sink(tmp_path, "v1", range(10))
    run_sink(tmp_path, "v2", range(4), model="org/model-b", partition=1)
    settings = load_settings(None, {"parquet": {"path": str(tmp_path), "format": "files"}, "redis": {"index": "v2"},
                                    "model": {"name": "org/model-b"}})
    report = parquet_status(settings, "news")
    assert (report["files"], report["rows"], report["index"]) == (2, 14, "v2")
    assert {k: v["rows"] for k, v in report["indexes"].items()} == {"v1": 10, "v2": 4}
    assert report["highest_offset"] == {"news:1": 3}
