"""DeltaLakeSink against a temporary folder (no services): what the table holds is read from its
transactions, nothing is written twice within an index, a writer whose versions moved keeps only
the rows past them (compare-and-swap, never doubled), backfill units commit once, and a folder
of plain files or a newer table is refused in a sentence."""

import threading
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from workers.errors import LakeFormatError
from workers.settings import ParquetSettings
from workers.sinks.base import SinkRecord
from workers.sinks.lake import DeltaLakeSink, app_id
from workers.sinks.parquet import ParquetSink

DIM = 4
DAY = datetime(2026, 11, 28, 9, tzinfo=UTC)


def records(offsets, partition=0, topic="news"):
    return [SinkRecord(id=f"d{o}", op="upsert", topic=topic, partition=partition, offset=o,
                       vector=np.full(DIM, 0.5, np.float32), title=f"title {o}", text=f"본문 {o}", lang="ko",
                       ingested_at=DAY) for o in offsets]


def sink(root, index="v1", model="org/model-a", **settings) -> DeltaLakeSink:
    s = DeltaLakeSink(ParquetSettings(path=str(root), **settings), index, model, None, DIM, "passage: ")
    s.setup()
    return s


def rows(root, index=None):
    t = DeltaTable(str(root)).to_pyarrow_table()
    return t if index is None else t.filter(pc.field("index") == index)


def test_held_offsets_come_from_the_transactions_and_nothing_is_written_twice(tmp_path):
    first = sink(tmp_path)
    first.assign([("news", 0), ("news", 1)])
    first.write(records(range(10), 0) + records(range(5), 1))
    first.close()
    table = DeltaTable(str(tmp_path))
    assert table.transaction_version(app_id("v1", "news", 0)) == 9
    assert table.transaction_version(app_id("v1", "news", 1)) == 4
    assert table.version() == 1, "the empty table, then one commit for both partitions"

    again = sink(tmp_path)
    again.assign([("news", 0), ("news", 1)])
    assert again.held_offsets() == {("news", 0): 9, ("news", 1): 4}
    again.write(records(range(12), 0) + records(range(5), 1))  # a replay of what is held, and two more
    again.close()
    assert again.rows_written == 2
    other = sink(tmp_path, index="v2", model="org/model-b")
    other.assign([("news", 0)])
    other.write(records(range(3), 0))
    other.close()
    v1 = rows(tmp_path, "v1")
    assert sorted(v1.filter(pc.field("kafka_partition") == 0)["kafka_offset"].to_pylist()) == list(range(12))
    assert len(rows(tmp_path, "v2")) == 3, "another index holds its own copy"
    assert set(v1["text"].to_pylist()) >= {"본문 0", "본문 11"} and set(v1["dt"].to_pylist()) == {"2026-11-28"}


def test_a_writer_whose_versions_moved_keeps_only_the_rows_past_them(tmp_path):
    """The old owner of a partition (a replica that lost it) and the new one race: every offset
    lands once, whoever commits first."""
    old, new = sink(tmp_path), sink(tmp_path)
    old.assign([("news", 0)])
    new.assign([("news", 0)])  # both read -1
    new.write(records(range(0, 30), 0))
    new.flush(0.0, force=True)
    old.write(records(range(0, 20), 0))  # all of it already committed by the new owner
    old.flush(0.0, force=True)
    old.write(records(range(20, 40), 0))  # the old owner was ahead: 30..39 are still its to write
    old.close()
    new.write(records(range(30, 50), 0))  # the new owner's expectation (29) is stale now: keeps 40..49
    new.close()
    offsets = rows(tmp_path)["kafka_offset"].to_pylist()
    assert sorted(offsets) == list(range(50)), "every offset once"
    assert old.rows_written == 10 and new.rows_written == 40
    assert DeltaTable(str(tmp_path)).transaction_version(app_id("v1", "news", 0)) == 49


def test_concurrent_writers_of_one_partition_never_double_it(tmp_path):
    writers = [sink(tmp_path) for _ in range(3)]
    for w in writers:
        w.assign([("news", 0)])

    def run(w):
        for start in range(0, 60, 10):
            w.write(records(range(start, start + 10), 0))
            w.flush(0.0, force=True)
        w.close()

    threads = [threading.Thread(target=run, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    offsets = rows(tmp_path)["kafka_offset"].to_pylist()
    assert sorted(offsets) == list(range(60))
    assert sum(w.rows_written for w in writers) == 60


def test_a_backfill_unit_commits_once(tmp_path):
    s = sink(tmp_path)
    unit = s.write_rows(records(range(100, 110), 3, topic="backfill.job1"), "backfill.job1", 3, 100, 109, "2026-11-29")
    assert unit == app_id("v1", "backfill.job1", 3) + "/100"
    s.write_rows(records(range(100, 110), 3, topic="backfill.job1"), "backfill.job1", 3, 100, 109, "2026-11-29")
    s.close()
    t = rows(tmp_path)
    assert len(t) == 10 and set(t["dt"].to_pylist()) == {"2026-11-29"}


def test_a_folder_of_plain_files_or_a_newer_table_is_refused(tmp_path):
    plain = ParquetSink(ParquetSettings(path=str(tmp_path / "plain"), format="files"), "v1", "m", None, DIM, "")
    plain.setup()
    plain.assign([("news", 0)])
    plain.write(records(range(3)))
    plain.close()
    with pytest.raises(LakeFormatError, match="older layout.*parquet.format: files.*lake import"):
        sink(tmp_path / "plain")

    newer = tmp_path / "newer"
    write_deltalake(str(newer), pa.table({"id": ["x"]}), description="embedworker vector lake, schema 9")
    with pytest.raises(LakeFormatError, match="newer embedworker"):
        sink(newer)


def test_compaction_while_a_stream_writes_and_a_reader_reads_shows_every_row_once(tmp_path):
    """Closed days are compacted while today's rows keep coming: every version a reader sees holds
    each offset once, and no row is lost; the transactions survive the rewrite."""
    from pipelines.config import load_settings
    from pipelines.maintenance import lake_admin as lake

    old_day = datetime(2026, 11, 1, 9, tzinfo=UTC)
    writer = sink(tmp_path)
    writer.assign([("news", 0), ("news", 1)])
    for start in range(0, 200, 10):  # 20 small files of a closed day
        writer.write([SinkRecord(id=f"d{o}", op="upsert", topic="news", partition=0, offset=o,
                                 vector=np.full(DIM, 0.5, np.float32), ingested_at=old_day)
                      for o in range(start, start + 10)])
        writer.flush(0.0, force=True)
    settings = load_settings(None, {"parquet": {"path": str(tmp_path)}, "redis": {"index": "v1"}})
    stop = threading.Event()
    seen: list[int] = []
    problems: list[str] = []

    def stream():
        offset = 0
        while not stop.is_set():
            batch = records(range(offset, offset + 5), 1)
            for record in batch:  # today: an open day, never compacted (DAY closes as the clock moves)
                record.ingested_at = datetime.now(UTC)
            writer.write(batch)
            writer.flush(0.0, force=True)
            offset += 5

    def read():
        while not stop.is_set():
            t = DeltaTable(str(tmp_path)).to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
            keys = list(zip(t["kafka_partition"].to_pylist(), t["kafka_offset"].to_pylist()))
            if len(keys) != len(set(keys)):
                problems.append(f"a duplicate row in a version of {len(keys)} rows")
            if sum(1 for p, _ in keys if p == 0) != 200:
                problems.append("a version without all of the closed day's rows")
            seen.append(len(keys))

    threads = [threading.Thread(target=stream), threading.Thread(target=read)]
    for t in threads:
        t.start()
    try:
        result = lake.compact(settings, older_than_days=1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    writer.close()
    assert result["days"] == 1 and result["files_removed"] == 20 and result["files_added"] == 1
    assert not problems, problems[:3]
    assert len(seen) >= 2
    table = DeltaTable(str(tmp_path))
    assert table.transaction_version(app_id("v1", "news", 0)) == 199
    assert sorted(rows(tmp_path).filter(pc.field("kafka_partition") == 0)["kafka_offset"].to_pylist()) == list(range(200))
    status = lake.lake_status(settings, "news", [0, 1])
    assert status["highest_offset"]["news:0"] == 199 and status["indexes"]["v1"]["rows"] == len(rows(tmp_path))


def test_the_driver_compacts_closed_days_by_itself_once_an_hour(tmp_path):
    from pipelines.config import load_settings
    from pipelines.maintenance.lake_admin import AutoCompactor

    writer = sink(tmp_path)
    writer.assign([("news", 0)])
    for start in range(0, 30, 10):
        writer.write(records(range(start, start + 10)))  # ingested on DAY, long closed
        writer.flush(0.0, force=True)
    writer.close()
    off = AutoCompactor(load_settings(None, {"parquet": {"path": str(tmp_path)}, "redis": {"index": "v1"}}))
    assert not off.due(now=10_000.0), "compact_after_days unset: never"
    auto = AutoCompactor(load_settings(None, {"parquet": {"path": str(tmp_path), "compact_after_days": 1},
                                              "redis": {"index": "v1"}}))
    result = auto.tick(now=10_000.0)
    assert result is not None and result["days"] == 1 and result["files_removed"] == 3
    assert auto.tick(now=10_500.0) is None, "within the hour: not again"
    assert sorted(rows(tmp_path)["kafka_offset"].to_pylist()) == list(range(30))


def test_lake_commands_on_a_folder_of_plain_files_say_so_and_exit_2(tmp_path, capsys):
    import yaml

    from pipelines.cli.main import main

    plain = ParquetSink(ParquetSettings(path=str(tmp_path / "plain"), format="files"), "v1", "m", None, DIM, "")
    plain.setup()
    plain.assign([("news", 0)])
    plain.write(records(range(3)))
    plain.close()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"parquet": {"path": str(tmp_path / "plain")}}))
    assert main(["lake", "compact", "-c", str(config)]) == 2
    said = capsys.readouterr().err
    assert "older layout" in said and "parquet.format: files" in said and "Traceback" not in said
    assert len(said.strip().splitlines()) == 1
