"""Operating the lake (the Delta table of `parquet.path`): its status read from the log, and
maintenance — compaction of closed days, vacuum, checkpoints — by `embedworker lake …` and by
the stream's driver (`parquet.compact_after_days`).

Every number here comes from the table's log (the last checkpoint and the commits after it),
never from listing folders or opening data files, so it costs the same at 100 and at 100,000
commits. Maintenance commits are ordinary commits: the stream keeps writing meanwhile (appends
of today's files do not conflict with rewriting a closed day) and a reader always sees one
version, with every row once.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from pipelines.config import EmbedworkerSettings
from workers.errors import EmbedworkerError
from workers.sinks.lake import app_id, open_table

log = logging.getLogger("embedworker.lake")


class LakeError(EmbedworkerError):
    """A lake command cannot run: no table at the path, or the store refused an operation."""


def uri_of(settings: EmbedworkerSettings) -> str:
    path = settings.parquet.path
    return path if "://" in path else os.path.abspath(path)


def table_of(settings: EmbedworkerSettings) -> DeltaTable:
    """The table, or LakeError naming the path when there is none yet."""
    table = open_table(uri_of(settings), settings.parquet.storage_options())
    if table is None:
        raise LakeError(f"no Delta table at {settings.parquet.path} yet (nothing was written)")
    return table


def lake_status(settings: EmbedworkerSettings, topic: str | None = None, partitions: list[int] | None = None) -> dict:
    """Files, rows and bytes per index from the log's file actions; per source partition of
    `topic`, the last offset the configured index holds (its application transaction)."""
    index = settings.redis.index_name(settings.model.name)
    table = open_table(uri_of(settings), settings.parquet.storage_options())
    if table is None:
        return {"path": settings.parquet.path, "format": "delta", "files": 0, "rows": 0, "bytes": 0, "index": index,
                "indexes": {}, "highest_offset": {}, "version": None}
    actions = pa.table(table.get_add_actions(flatten=True))
    indexes: dict[str, dict] = {}
    if actions.num_rows:
        grouped = actions.group_by("partition.index").aggregate(
            [("path", "count"), ("num_records", "sum"), ("size_bytes", "sum"), ("partition.dt", "min"),
             ("partition.dt", "max")])
        for row in grouped.to_pylist():
            indexes[row["partition.index"]] = {"files": row["path_count"], "rows": int(row["num_records_sum"] or 0),
                                               "bytes": int(row["size_bytes_sum"] or 0),
                                               "days": f"{row['partition.dt_min']}…{row['partition.dt_max']}"}
    highest = {}
    for p in partitions or []:
        version = table.transaction_version(app_id(index, topic or settings.kafka.topic, p))
        if version is not None:
            highest[f"{topic or settings.kafka.topic}:{p}"] = int(version)
    totals = {k: sum(e[k] for e in indexes.values()) for k in ("files", "rows", "bytes")}
    return {"path": settings.parquet.path, "format": "delta", **totals, "index": index, "indexes": indexes,
            "highest_offset": highest, "version": table.version()}


def lake_dataset(settings: EmbedworkerSettings):
    """The current version's rows as a pyarrow dataset (for the lake through its log: uncommitted
    and replaced files are never read; for plain files the folder, with `index` and `dt` from the
    paths). None when nothing was written yet."""
    import pyarrow.dataset as ds

    p = settings.parquet
    if p.format == "delta":
        table = open_table(uri_of(settings), p.storage_options())
        return None if table is None else table.to_pyarrow_dataset()
    from workers.sinks.parquet_files import list_files, open_filesystem

    fs, root = open_filesystem(p.path)
    if not list_files(fs, root):
        return None
    return ds.dataset(root, filesystem=fs, format="parquet", partitioning="hive")


def read_rows(settings: EmbedworkerSettings, index: str | None = None, columns: list[str] | None = None,
              filter=None) -> pa.Table | None:
    """The rows of the current version (one index's, or all), in memory, as readers should see
    them (`lake_dataset`). None when nothing was written yet. For small reads (eval, tests); a
    whole index goes through pipelines/maintenance/lake_scan.py instead."""
    import pyarrow.dataset as ds

    dataset = lake_dataset(settings)
    if dataset is None:
        return None
    condition = None if index is None else ds.field("index") == index
    if filter is not None:
        condition = filter if condition is None else condition & filter
    return dataset.to_table(columns=columns, filter=condition)


def closed_days(table: DeltaTable, older_than_days: int = 1, index: str | None = None) -> list[tuple[str, str]]:
    """(index, dt) partitions whose day ended at least `older_than_days` days ago (UTC)."""
    cut = (datetime.now(UTC) - timedelta(days=older_than_days - 1)).strftime("%Y-%m-%d")
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows:
        return []
    keys = actions.select(["partition.index", "partition.dt"]).group_by(["partition.index", "partition.dt"]) \
        .aggregate([]).filter(pc.field("partition.dt") < cut)
    out = sorted((r["partition.index"], r["partition.dt"]) for r in keys.to_pylist())
    return [k for k in out if index is None or k[0] == index]


def compact(settings: EmbedworkerSettings, older_than_days: int = 1, index: str | None = None) -> dict:
    """Merge the small files of each closed day into files of `parquet.target_file_mb`, one
    commit per day (the transactions stay as they are). Safe while the stream writes."""
    table = table_of(settings)
    target = settings.parquet.target_file_mb * 1024 * 1024
    done = {"days": 0, "files_removed": 0, "files_added": 0, "seconds": 0.0}
    started = time.monotonic()
    for idx, day in closed_days(table, older_than_days, index):
        metrics = table.optimize.compact(partition_filters=[("index", "=", idx), ("dt", "=", day)], target_size=target)
        if metrics.get("numFilesRemoved", 0):
            done["days"] += 1
            done["files_removed"] += int(metrics["numFilesRemoved"])
            done["files_added"] += int(metrics["numFilesAdded"])
            log.info("compacted %s/%s: %d files into %d", idx, day, metrics["numFilesRemoved"], metrics["numFilesAdded"])
    done["seconds"] = round(time.monotonic() - started, 2)
    done["version"] = table.version()
    return done


def vacuum(settings: EmbedworkerSettings, retention_hours: int | None = None, dry_run: bool = False) -> dict:
    """Delete files no version newer than the retention needs: files compaction replaced, and
    files a writer wrote but never committed (a replica killed between the two). The retention
    (default `parquet.vacuum_retention_hours`, at least one hour) outlives any running writer's
    uncommitted file, so nothing a writer may still commit is removed."""
    hours = retention_hours or settings.parquet.vacuum_retention_hours
    if hours < 1:
        raise LakeError("vacuum retention must be at least 1 hour: a running writer's files are not committed yet")
    table = table_of(settings)
    removed = table.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False, full=True)
    return {"files": len(removed), "dry_run": dry_run, "retention_hours": hours, "paths": removed[:20]}


def checkpoint(settings: EmbedworkerSettings) -> dict:
    """Write a checkpoint of the current version and drop log files past the log retention."""
    table = table_of(settings)
    table.create_checkpoint()
    table.cleanup_metadata()
    return {"version": table.version()}


class AutoCompactor:
    """Called by the stream's driver in its supervise loop: compacts days older than
    `parquet.compact_after_days` at most once an hour; a failure is logged and tried next time."""

    def __init__(self, settings: EmbedworkerSettings, every_s: float = 3600.0):
        self.settings = settings
        self.every_s = every_s
        self._last = 0.0

    def due(self, now: float | None = None) -> bool:
        p = self.settings.parquet
        now = time.monotonic() if now is None else now
        return bool(p.enabled and p.format == "delta" and p.compact_after_days) and now - self._last >= self.every_s

    def tick(self, now: float | None = None) -> dict | None:
        """Compact if due (a maintenance thread of the driver calls this). Never raises."""
        p = self.settings.parquet
        now = time.monotonic() if now is None else now
        if not self.due(now):
            return None
        self._last = now
        try:
            return compact(self.settings, older_than_days=p.compact_after_days)
        except Exception as exc:  # noqa: BLE001 - maintenance never stops the stream
            log.warning("lake: compaction failed (tried again in %.0f s): %s", self.every_s, exc)
            return None
