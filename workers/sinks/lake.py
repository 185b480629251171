"""The lake: the Parquet side as one Delta Lake table (delta-rs), local or on object storage.

    {path}/_delta_log/…                         the table's log (commits, checkpoints)
    {path}/index={index}/dt=2026-11-29/part-….parquet

Every index (`redis.index`, `--target` or the model slug) lives in the one table, partitioned by
`index` and `dt`. Each flush of the writer thread is one commit of its files that carries, per
source partition in it, an application transaction: app id `embedworker/{index}/{topic}/{partition}`,
version = the last offset written. That is how the sink knows what the table holds (read on
assignment: no listing, flat cost however long the history) and how a write stays exactly-once:
a commit is made only while the versions are what the sink last saw — compare-and-swap; delta-rs
refuses one of two concurrent commits with the same app id — so a replica that lost a partition
cannot write a range its new owner wrote (it re-reads, keeps only the offsets past it, and so
does the owner). Files written and not committed (a writer killed between the two) are never
read and go with `lake vacuum`. Backfill units commit the same way, one app id per unit, so a
unit that ran once is a no-op the second time (kafka-delta-ingest's design).
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from datetime import UTC, datetime

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import (
    CommitFailedError,
    DeltaError,
    DeltaProtocolError,
    SchemaMismatchError,
    TableNotFoundError,
)

from workers.errors import LakeFormatError, SinkBackpressureError, SinkError
from workers.settings import ParquetSettings
from workers.sinks.base import TP, SinkRecord
from workers.sinks.parquet import ParquetSink, Piece
from workers.sinks.parquet_files import list_files, open_filesystem, parquet_schema, records_table

log = logging.getLogger("embedworker.lake")
LAKE_SCHEMA_VERSION = "1"  # written into the table's description when the table is created
SCHEMA_MARK = re.compile(r"embedworker vector lake, schema (?P<version>\d+)")
PARTITION_BY = ["index", "dt"]
COMPRESSION = {"zstd": "ZSTD", "snappy": "SNAPPY", "gzip": "GZIP", "none": "UNCOMPRESSED"}
CAS_ATTEMPTS = 20
# Errors no retry fixes (a table of a newer protocol, another schema): the replica stops in words.
# The rest of DeltaError and OSError (the store unreachable, a full disk) is backpressure.
PERMANENT = (DeltaProtocolError, SchemaMismatchError)


def app_id(index: str, topic: str, partition: int) -> str:
    return f"embedworker/{index}/{topic}/{partition}"


def lake_schema(dim: int) -> pa.Schema:
    """The table's columns: the Parquet schema, the document text (null unless
    `parquet.include_text`; always a column, so writers with either setting share one schema),
    and the partition columns."""
    base = parquet_schema(dim)
    base = base.insert(base.get_field_index("title") + 1, pa.field("text", pa.string()))
    return base.append(pa.field("index", pa.string())).append(pa.field("dt", pa.string()))


def open_table(uri: str, storage_options: dict[str, str] | None) -> DeltaTable | None:
    """The table at `uri`, or None when there is none yet (a plain folder of files is refused).
    Raises LakeFormatError; OSError/DeltaError when the store cannot be read."""
    try:
        table = DeltaTable(uri, storage_options=storage_options)
    except TableNotFoundError:
        if "://" not in uri or uri.startswith("file://"):
            fs, root = open_filesystem(uri)
            if list_files(fs, root):
                raise LakeFormatError(
                    f"{uri} holds Parquet files of the older layout and no Delta table: keep reading it with "
                    "parquet.format: files, or commit them into a table with `embedworker lake import`") from None
        return None
    found = SCHEMA_MARK.search(table.metadata().description or "")
    version = found["version"] if found else LAKE_SCHEMA_VERSION
    if int(version) > int(LAKE_SCHEMA_VERSION):
        raise LakeFormatError(f"the table at {uri} was written by a newer embedworker (lake schema {version}; this "
                              f"version writes {LAKE_SCHEMA_VERSION}): upgrade embedworker to write to it")
    return table


def create_table(uri: str, schema: pa.Schema, storage_options: dict[str, str] | None) -> DeltaTable:
    """An empty table (version 0) with the lake's schema and partitioning, made before any data
    so that the first writes of several replicas are ordinary appends, whose transactions delta-rs
    checks against each other (two first commits racing to create it are not). Another process
    creating it at the same moment is fine: its table is opened."""
    try:
        return DeltaTable.create(uri, schema, mode="error", partition_by=PARTITION_BY, name="embedworker",
                                 description=f"embedworker vector lake, schema {LAKE_SCHEMA_VERSION}",
                                 storage_options=storage_options)
    except DeltaError:
        table = open_table(uri, storage_options)
        if table is None:
            raise
        return table


class DeltaLakeSink(ParquetSink):
    """ParquetSink's buffering and writer thread; the writes are commits to the table."""

    def setup(self) -> None:
        s = self.settings
        self._uri = s.path if "://" in s.path else os.path.abspath(s.path)
        self._storage = s.storage_options()
        self._lake_schema = lake_schema(self.dim).with_metadata(self.schema.metadata)
        self._writer_properties = WriterProperties(compression=COMPRESSION[s.compression])  # type: ignore[arg-type]
        # each commit says which model, revision, prefix and dimension made its vectors
        self._commit_meta = {k.decode(): v.decode() for k, v in (self.schema.metadata or {}).items()}
        self._writer_id = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        try:
            self._table = open_table(self._uri, self._storage) or create_table(
                self._uri, self._lake_schema, self._storage)
        except (OSError, DeltaError) as exc:
            raise SinkError(f"cannot open the lake at {self._uri}: {exc}") from None
        self._start_writer()

    def _refresh(self) -> DeltaTable:
        try:
            self._table.update_incremental()
        except PERMANENT as exc:
            raise SinkError(f"the lake at {self._uri} cannot be written by this version: {exc}") from None
        except (OSError, DeltaError) as exc:
            raise SinkBackpressureError(f"cannot read the lake at {self._uri}: {exc}", retry_after_s=2.0) from None
        return self._table

    def _read_held(self, partitions: list[TP]) -> None:
        table = self._refresh()
        held = {tp: _version(table, app_id(self.index, *tp)) for tp in partitions}
        with self._cond:
            self._held.update(held)

    def _write_pieces(self, pieces: list[Piece], expected: dict[TP, int]) -> dict[TP, int]:
        """One commit for all pieces, made only while each partition's version is `expected`;
        a partition someone else advanced keeps only the rows past it. Returns what the table
        holds per partition afterwards. Raises SinkBackpressureError."""
        for _ in range(CAS_ATTEMPTS):
            table = self._refresh()
            actual = {p.tp: _version(table, app_id(self.index, *p.tp)) for p in pieces}
            moved = {tp: v for tp, v in actual.items() if v != expected[tp]}
            if moved:
                # another writer, or a commit of this one whose answer was lost (seen by the nemesis:
                # S3 +1 s latency): either way those rows are there once, and only later ones are added
                log.warning("lake: %s committed since this replica read them (by another writer, or an earlier "
                            "attempt of its own whose answer was lost); keeping only later rows",
                            ", ".join(f"{t}:{p} (at {v})" for (t, p), v in moved.items()))
                pieces = [Piece(p.tp, rows, rows[0].offset, p.last) for p in pieces
                          if (rows := [r for r in p.rows if r.offset > actual[p.tp]])]
                expected = actual
            if not pieces:
                return actual
            try:
                self._commit(pieces, [Transaction(app_id(self.index, *p.tp), p.last) for p in pieces])
            except CommitFailedError as exc:  # a concurrent commit with one of our app ids: read again
                log.info("lake: commit refused (%s); reading the versions again", exc)
                continue
            return {**actual, **{p.tp: p.last for p in pieces}}
        raise SinkBackpressureError(f"lake at {self._uri}: {CAS_ATTEMPTS} commits in a row were refused by concurrent "
                                    "writers", retry_after_s=1.0)

    def write_rows(self, rows: list[SinkRecord], topic: str, partition: int, first: int, last: int, day: str) -> str:
        """A backfill unit's rows in one commit whose app id names the unit (topic, file and
        first offset); a unit already committed is not written again. Returns the app id."""
        unit = app_id(self.index, topic, partition) + f"/{first}"
        table = self._refresh()
        if _version(table, unit) >= last:
            return unit
        try:
            self._commit([Piece((topic, partition), rows, first, last)], [Transaction(unit, last)], day)
        except CommitFailedError as exc:
            if _version(self._refresh(), unit) < last:
                raise SinkBackpressureError(f"lake at {self._uri}: commit refused: {exc}") from None
        return unit

    def _commit(self, pieces: list[Piece], txns: list[Transaction], day: str | None = None) -> None:
        tables = [self._table_of(p, day) for p in pieces]
        data = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        try:
            write_deltalake(self._table, data, mode="append", partition_by=PARTITION_BY,
                            storage_options=self._storage, writer_properties=self._writer_properties,
                            commit_properties=CommitProperties(app_transactions=txns, custom_metadata={
                                **self._commit_meta, "embedworker.writer": self._writer_id}))
        except CommitFailedError:
            raise
        except PERMANENT as exc:
            raise SinkError(f"the lake at {self._uri} refused the commit for good: {exc}") from None
        except (OSError, DeltaError) as exc:
            raise SinkBackpressureError(f"cannot commit to the lake at {self._uri}: {exc}", retry_after_s=2.0) from None
        self.files_written += 1
        self.rows_written += len(data)

    def _table_of(self, piece: Piece, day: str | None) -> pa.Table:
        rows = piece.rows
        base = records_table(rows, self.schema)
        if day is None:
            day = (rows[0].ingested_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")
        columns = dict(zip(base.column_names, base.columns))
        columns["text"] = pa.array([r.text for r in rows] if self.settings.include_text else [None] * len(rows),
                                   pa.string())
        columns["index"] = pa.array([self.index] * len(rows), pa.string())
        columns["dt"] = pa.array([day] * len(rows), pa.string())
        return pa.Table.from_arrays([columns[f.name] for f in self._lake_schema], schema=self._lake_schema)


def _version(table: DeltaTable, app: str) -> int:
    """The last offset the table holds for an app id; -1 when it has none."""
    v = table.transaction_version(app)
    return -1 if v is None else int(v)


def new_parquet_sink(settings: ParquetSettings, index: str, model_id: str, model_revision: str | None, dim: int,
                     document_prefix: str) -> ParquetSink:
    """The Parquet side as configured: the Delta table (`format: delta`) or plain files."""
    kind = DeltaLakeSink if settings.format == "delta" else ParquetSink
    return kind(settings, index, model_id, model_revision, dim, document_prefix)
