"""The lake on object storage, for real: two replicas stream into one Delta table on the local
S3-compatible server (infra/local/s3.sh) while one is killed -9; every record lands once, status
reads the log, compaction and vacuum run there; a backfill reads JSONL from s3:// and writes the
table there, twice without doubling; the lexical index reads that table and keeps its snapshot
there; files a killed writer left uncommitted are never read and
vacuum removes them."""

import json
import os
import signal
import time

import fsspec
import numpy as np
import pyarrow.compute as pc
import pytest
import ray
from deltalake import DeltaTable

from pipelines.batch.backfill import BackfillJob
from pipelines.lexical.index import LexicalIndex
from pipelines.maintenance import lake_admin as lake
from pipelines.ops.status import lexical_status
from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import committed_offsets, read_parquet, wait_until
from tests.reliability.conftest import Stream, supervising, wait_all_committed
from workers.sinks.base import SinkRecord

pytestmark = pytest.mark.integration


def test_two_replicas_on_s3_with_a_kill_write_every_record_once(ray_cluster, stream_settings, s3_lake, redis_client):
    settings = stream_settings(workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30},
                               parquet={**s3_lake, "max_seconds": 0.5})
    stream = Stream(settings, 1200, seed=3, partitions=4)
    stream.send(400)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    with supervising(supervisor):
        wait_until(lambda: stream.committed() > 150, timeout=120, message="progress before the kill")
        victim = supervisor.actors[1]
        os.kill(ray.get(victim.pid.remote(), timeout=30), signal.SIGKILL)
        stream.send()
        wait_all_committed(settings, supervisor, timeout=240)
    stream.check(redis_client)  # Redis and the lake on S3: every valid record exactly once

    status = lake.lake_status(settings, settings.kafka.topic, [0, 1, 2, 3])
    assert status["rows"] == len(stream.valid) and status["indexes"]["tiny-bert"]["rows"] == len(stream.valid)
    ends = {p: o for p, o in committed_offsets(settings).items()}
    assert all(status["highest_offset"][f"{settings.kafka.topic}:{p}"] <= end - 1 for p, end in ends.items())
    files_before = status["files"]
    result = lake.compact(settings, older_than_days=0)  # today too: the day is closed for this test
    assert result["files_removed"] == files_before and result["files_added"] >= 1
    after = read_parquet(settings)
    assert after.num_rows == len(stream.valid) and lake.lake_status(settings)["files"] == result["files_added"]
    assert lake.vacuum(settings, retention_hours=1)["files"] == 0, "replaced files are kept for the retention"

    # The lexical index from the same table on S3 (after the compaction: the same rows in new files),
    # its snapshot saved there and read back by a new process's index; status reads it too.
    lexical = LexicalIndex(settings, "tiny-bert")
    assert lexical.refresh() and lexical.documents == len(stream.valid)
    some_id, some_text = next(iter(stream.valid.items()))
    assert some_id in [h.id for h in lexical.search(some_text, 50)]
    assert lexical.save_snapshot().startswith("_lexical/tiny-bert/")
    fresh = LexicalIndex(settings, "tiny-bert")
    assert fresh.load_snapshot() == lexical.version and fresh.documents == len(stream.valid)
    assert not fresh.refresh(), "nothing new in the lake since the snapshot"
    report = lexical_status(settings)
    assert report["snapshot"]["version"] == report["lake_version"] and report["versions_behind"] == 0


def test_a_backfill_reads_jsonl_from_s3_and_writes_the_table_there(ray_cluster, stream_settings, s3_lake):
    settings = stream_settings(parquet=s3_lake, workers={"replicas": 1, "num_gpus": 0, "num_cpus": 0.5})
    settings.parquet.s3.configure_fsspec()
    fs = fsspec.filesystem("s3")
    source = s3_lake["path"].rsplit("/", 1)[0].removeprefix("s3://") + "/input"
    for k in range(2):
        with fs.open(f"{source}/part-{k}.jsonl", "w") as f:
            for i in range(60):
                f.write(json.dumps({"id": f"s3-{k}-{i}", "text": f"문서 {k} {i} market news", "lang": "ko"}) + "\n")
            f.write('{"id": "broken", "text": \n')
    first = BackfillJob(settings, f"s3://{source}/*.jsonl", target="v1").run()
    assert (first["embedded"], first["rejected"]) == (120, 2)
    again = BackfillJob(settings, f"s3://{source}/*.jsonl", target="v1").run()
    assert again["embedded"] == 120, "the second run finds every unit done"
    table = read_parquet(settings, index="v1")
    assert table.num_rows == 120 and len(set(table["id"].to_pylist())) == 120
    assert set(table["text"].to_pylist()) >= {"문서 0 0 market news", "문서 1 59 market news"}


def test_files_a_killed_writer_left_uncommitted_are_never_read_and_vacuum_removes_them(stream_settings, tmp_path):
    """A replica killed between writing its file and committing it leaves an orphan data file
    in the table's folder: readers, the next owner and status go by the log only."""
    from workers.sinks.lake import DeltaLakeSink

    settings = stream_settings()
    sink = DeltaLakeSink(settings.parquet, "v1", "m", None, 4, "")
    sink.setup()
    sink.assign([("news", 0)])
    sink.write([SinkRecord(id=f"d{o}", op="upsert", topic="news", partition=0, offset=o,
                           vector=np.ones(4, np.float32)) for o in range(10)])
    sink.close()
    table = DeltaTable(settings.parquet.path)
    committed = pc.field("index") == "v1"
    data_file = next(p for p in table.file_uris() if "index=v1" in p)
    orphan = data_file.replace(".parquet", "-orphan.parquet")
    with open(data_file, "rb") as src, open(orphan, "wb") as dst:  # the same rows, never committed
        dst.write(src.read())
    old = time.time() - 3 * 3600
    os.utime(orphan, (old, old))
    assert read_parquet(settings).num_rows == 10
    assert table.to_pyarrow_dataset().to_table(filter=committed).num_rows == 10
    nxt = DeltaLakeSink(settings.parquet, "v1", "m", None, 4, "")
    nxt.setup()
    nxt.assign([("news", 0)])
    assert nxt.held_offsets() == {("news", 0): 9}
    nxt.close()
    assert lake.lake_status(settings)["rows"] == 10
    removed = lake.vacuum(settings, retention_hours=1)
    assert removed["files"] == 1 and not os.path.exists(orphan) and os.path.exists(data_file)
    assert read_parquet(settings).num_rows == 10
