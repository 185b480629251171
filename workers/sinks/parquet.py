"""Parquet files: rolling, Hive-partitioned by index and day, one source partition's contiguous
offsets per file.

    {path}/index={index}/dt=2026-11-27/{topic}-p{partition:05d}-o{first:019d}-{last:019d}.parquet

The index is the vector-set index the worker writes (`redis.index`, `--target`, or the model
slug), so a model upgrade writes a complete second copy beside the first and a reader selects
one with `index=...`. A file is written to a temporary name, fsynced and renamed (object stores:
written in one go, which is atomic there), so a reader never sees half a file. Records arrive in
offset order per partition and a file holds one partition's run of offsets, so the highest `last`
in the index's folder is everything this partition has in that index, whichever worker wrote it:
on assignment the sink reads it from the file names and skips what it already holds. Nothing is
written twice.

Files of the layout before the index folder (`{path}/dt=.../...`) are still read by everything
that reads the folder; the sink counts them as held by every index of the model that wrote them
(the file's `embedworker.model` metadata), so upgrading embedworker writes nothing twice.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from workers.errors import SinkBackpressureError, SinkError
from workers.settings import ParquetSettings
from workers.sinks.base import TP, SinkRecord
from workers.sinks.parquet_files import (
    DICTIONARY_COLUMNS,
    SCHEMA_VERSION,
    file_model,
    file_name,
    index_of,
    list_files,
    open_filesystem,
    parquet_schema,
    records_table,
)

log = logging.getLogger("embedworker.parquet")


@dataclass
class Piece:
    """A sealed buffer's rows still to write: one source partition's contiguous offsets."""

    tp: TP
    rows: list[SinkRecord]
    first: int
    last: int


@dataclass
class _Buffer:
    rows: list[SinkRecord] = field(default_factory=list)
    opened_at: float = 0.0
    first: int = -1
    last: int = -1


class ParquetSink:
    """Rows are buffered per partition; a buffer that is full or old enough is sealed and written
    by a writer thread of its own, so slow storage never holds up the other sinks.

    The writer thread retries what storage refuses for now (SinkBackpressureError, under the
    error's `retry_after_s`) and keeps everything; anything else ends it: a permanent error
    (SinkError: a table of another protocol or schema) or a bug. Either way `failure()` says why
    and `flush()` raises it, so the replica stops (in words, or restarted) instead of buffering
    forever. With `threaded=False` (the simulation) there is no thread: `write_once()` is its
    round, and a forced flush writes inline."""

    name = "parquet"
    threaded = True

    def __init__(self, settings: ParquetSettings, index: str, model_id: str, model_revision: str | None, dim: int,
                 document_prefix: str):
        self.settings = settings
        self.index = index
        self.model_id = model_id
        self.dim = dim
        self.schema = parquet_schema(dim).with_metadata({
            "embedworker.schema_version": SCHEMA_VERSION, "embedworker.model": model_id,
            "embedworker.model_revision": model_revision or "", "embedworker.dim": str(dim),
            "embedworker.document_prefix": document_prefix, "embedworker.normalization": "l2",
            "embedworker.index": index,
        })
        self._fs: pafs.FileSystem | None = None
        self._root = ""
        self._local = True
        self._legacy_models: dict[str, str] = {}  # files of the layout before index folders -> model
        self._held: dict[TP, int] = {}     # highest offset already in Parquet, per partition
        self._given: dict[TP, int] = {}    # highest offset handed to this sink
        self._buffers: dict[TP, _Buffer] = {}          # open: still taking rows
        self._sealed: deque[tuple[TP, _Buffer]] = deque()  # closed, waiting for the writer, in order
        self._cond = threading.Condition()
        self._error: SinkBackpressureError | None = None
        self._fatal: BaseException | None = None  # what ended the writer thread
        self._writer: threading.Thread | None = None
        self._writing_since: float | None = None  # when the writer thread's write in progress began
        self._closing = False
        self.files_written = 0
        self.rows_written = 0

    def setup(self) -> None:
        self._fs, self._root = open_filesystem(self.settings.path)
        self._local = isinstance(self._fs, pafs.LocalFileSystem)
        try:
            self._fs.create_dir(self._root, recursive=True)
        except OSError as exc:
            raise SinkError(f"cannot create Parquet folder {self._root}: {exc}") from None
        self._start_writer()

    def _start_writer(self) -> None:
        # pyarrow loads its compute and pandas layers on the first timestamp-with-zone column:
        # seconds of CPU, paid here rather than by the first file of the stream.
        pq.write_table(records_table([], self.schema), pa.BufferOutputStream(), compression=self.settings.compression)
        if self.threaded:
            self._writer = threading.Thread(target=self._write_loop, name="parquet-writer", daemon=True)
            self._writer.start()

    def background_stall_s(self) -> float:
        """Seconds the writer thread's write in progress has been running (0 when none is): a
        store that hangs or retries for long pauses the input through the sink stage."""
        since = self._writing_since
        return 0.0 if since is None else time.monotonic() - since

    def failure(self) -> BaseException | None:
        """What ended the writer thread (None while it runs): a SinkError, or an unexpected
        exception; also a thread that is gone without one."""
        if self._fatal is not None:
            return self._fatal
        if self._writer is not None and not self._writer.is_alive() and not self._closing:
            return RuntimeError("the Parquet writer thread ended")
        return None

    def assign(self, partitions: list[TP]) -> None:
        """Start these partitions afresh and read what the folder already holds for them
        (whoever wrote it). If the folder cannot be read now, that is retried before the
        partition's first file is written."""
        with self._cond:
            self._forget(partitions)
        try:
            self._read_held(partitions)
        except SinkBackpressureError:
            pass

    def _read_held(self, partitions: list[TP]) -> None:
        wanted = set(partitions)
        held = {tp: -1 for tp in partitions}
        for path, m in list_files(self._fs, self._root):
            tp = (m["topic"], int(m["partition"]))
            if tp in wanted and self._holds(path):
                held[tp] = max(held[tp], int(m["last"]))
        with self._cond:
            self._held.update(held)

    def _holds(self, path: str) -> bool:
        """Whether a file counts for this sink's index: its own folder, or an older file (no index
        folder) written by the same model."""
        index = index_of(path[len(self._root):])
        if index is not None:
            return index == self.index
        if path not in self._legacy_models:
            try:
                self._legacy_models[path] = file_model(self._fs, path)
            except OSError as exc:
                raise SinkBackpressureError(f"cannot read Parquet file {path}: {exc}") from None
        return self._legacy_models[path] == self.model_id

    def held_offsets(self) -> dict[TP, int]:
        with self._cond:
            return dict(self._held)

    def write(self, records: list[SinkRecord], now: float | None = None) -> None:
        """Buffer records in memory (never fails); files are written after flush() seals them."""
        now = now if now is not None else datetime.now().timestamp()
        with self._cond:
            for rec in records:
                tp = rec.tp
                if rec.offset < self._given.get(tp, -1):
                    continue  # handed over again: already taken
                self._given[tp] = rec.offset
                if rec.offset <= self._held.get(tp, -1):
                    continue  # already in a Parquet file: never written twice
                buf = self._buffers.get(tp)
                if buf is None:
                    buf = self._buffers[tp] = _Buffer(opened_at=now, first=rec.offset)
                buf.rows.append(rec)
                buf.last = rec.offset

    def flush(self, now: float, force: bool = False, timeout: float = 60.0) -> None:
        """Seal every buffer that is full, older than max_seconds, or all with `force` (then wait
        until they are written). Raises SinkBackpressureError while files cannot be written."""
        with self._cond:
            for tp, buf in list(self._buffers.items()):
                if force or len(buf.rows) >= self.settings.max_rows_per_file or \
                        now - buf.opened_at >= self.settings.max_seconds:
                    self._seal(tp)
            if force:
                self._wait_written(lambda: not self._sealed, timeout)
            if self._fatal is not None:
                raise self._fatal
            if self._error is not None:
                raise self._error

    def _wait_written(self, done, timeout: float) -> None:
        """Wait (holding `_cond`) until `done()`, the writer failed or `timeout` passed; without a
        thread, write inline instead."""
        if not self.threaded:
            self._cond.release()
            try:
                while not done() and self._error is None:
                    if not self.write_once():
                        break
            finally:
                self._cond.acquire()
            return
        self._cond.wait_for(lambda: done() or self._error is not None or self._fatal is not None, timeout)

    def _seal(self, tp: TP) -> None:
        self._sealed.append((tp, self._buffers.pop(tp)))
        self._cond.notify_all()

    def durable_offsets(self) -> dict[TP, int]:
        with self._cond:
            first_open: dict[TP, int] = {}
            for tp, buf in self._sealed:
                first_open.setdefault(tp, buf.first)
            for tp, buf in self._buffers.items():
                first_open.setdefault(tp, buf.first)
            return {tp: (first_open[tp] - 1 if tp in first_open else given) for tp, given in self._given.items()}

    def revoke(self, partitions: list[TP], flush: bool = True) -> dict[TP, int]:
        gone = set(partitions)
        with self._cond:
            if flush:
                for tp in [t for t in self._buffers if t in gone]:
                    self._seal(tp)
                self._wait_written(lambda: not any(t in gone for t, _ in self._sealed), timeout=10.0)
            durable = {tp: off for tp, off in self.durable_offsets().items() if tp in gone}
            self._forget(partitions)
        return durable  # what was not written is not committed: the next owner reads it again

    def _forget(self, partitions: list[TP]) -> None:
        gone = set(partitions)
        self._sealed = deque(item for item in self._sealed if item[0] not in gone)
        for tp in partitions:
            for table in (self._held, self._given, self._buffers):
                table.pop(tp, None)
        if not self._sealed:
            # the refused writes were of these partitions: nothing is left to retry, so the
            # sink takes data again (kept, every flush would refuse and the input stay paused)
            self._error = None

    def close(self) -> None:
        """Write what is buffered (waiting up to a minute), then stop the writer thread."""
        try:
            if self._fatal is None:
                self.flush(0.0, force=True)
        finally:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            if self._writer is not None:
                self._writer.join(10)

    # ---- files ----------------------------------------------------------------------------

    def _write_loop(self) -> None:
        """The writer thread: `write_once()` until the sink closes. What ends it is kept in
        `failure()`, said in one line, and raised by the next flush."""
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._sealed or self._closing)
                    if not self._sealed:
                        return
                    retry_after = self._error.retry_after_s if self._error is not None else 0.0
                if retry_after:
                    with self._cond:  # waiting out the retry delay (woken early by close)
                        self._cond.wait_for(lambda: self._closing, retry_after)
                self.write_once()
        except BaseException as exc:  # noqa: BLE001 - a permanent error or a bug: the replica stops
            log.error("the lake writer stopped: %s: %s", type(exc).__name__, exc)
            with self._cond:
                self._fatal = exc
                self._cond.notify_all()

    def step_writer(self) -> bool:
        """One round of the writer with its failure kept as the thread keeps it (the simulation
        runs the writer this way, `threaded=False`). Returns whether it wrote."""
        try:
            return self.write_once()
        except BaseException as exc:  # noqa: BLE001 - kept for failure(), as the thread does
            with self._cond:
                self._fatal = exc
                self._cond.notify_all()
            return False

    def write_once(self) -> bool:
        """One round of the writer: take every sealed buffer, write them (`_write_pieces`), then
        record what is held. Backpressure is kept (`_error`) and retried by the next round;
        nothing is dropped. Returns whether it wrote. Raises anything but backpressure."""
        with self._cond:
            if not self._sealed:
                return False
            batch = list(self._sealed)
            unknown = [tp for tp, _ in batch if tp not in self._held]
        if self.threaded:
            self._writing_since = time.monotonic()
        try:
            if unknown:
                self._read_held(unknown)  # the store was unreadable at assignment
            with self._cond:
                held = {tp: self._held.get(tp, -1) for tp, _ in batch}
            expected = dict(held)  # what the store holds now, as this sink believes
            pieces: list[Piece] = []
            for tp, buf in batch:
                rows = [r for r in buf.rows if r.offset > held[tp]]
                if rows:
                    pieces.append(Piece(tp, rows, rows[0].offset, buf.last))
                held[tp] = max(held[tp], buf.last)
            if pieces:
                held.update(self._write_pieces(pieces, expected))
        except SinkBackpressureError as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()
            return False
        finally:
            self._writing_since = None
        with self._cond:
            done = {id(buf) for _, buf in batch}
            self._sealed = deque(item for item in self._sealed if id(item[1]) not in done)
            for tp in held:
                if tp in self._given:  # not revoked meanwhile
                    self._held[tp] = max(self._held.get(tp, -1), held[tp])
            self._error = None
            self._cond.notify_all()
        return True

    def _write_pieces(self, pieces: list[Piece], expected: dict[TP, int]) -> dict[TP, int]:
        """Write each piece as one file (this layout needs no fencing: a file's name is its
        offset range, so a second writer of the same range replaces it). Returns nothing new
        about what is held. Raises SinkBackpressureError."""
        for p in pieces:
            day = (p.rows[0].ingested_at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d")
            self.write_rows(p.rows, p.tp[0], p.tp[1], p.first, p.last, day)
        return {}

    def write_rows(self, rows: list[SinkRecord], topic: str, partition: int, first: int, last: int, day: str) -> str:
        """Write one file of `rows` under index=`self.index`/dt=`day`, named by topic, partition and
        offset range (replacing a file of the same name). Raises SinkBackpressureError when it cannot."""
        folder = f"{self._root}/index={self.index}/dt={day}"
        final = f"{folder}/{file_name(topic, partition, first, last)}"
        table = records_table(rows, self.schema)
        try:
            assert self._fs is not None, "setup() opens the filesystem"
            self._fs.create_dir(folder, recursive=True)
            if self._local:
                self._write_local(table, folder, final)
            else:
                with self._fs.open_output_stream(final) as out:
                    pq.write_table(table, out, compression=self.settings.compression, use_dictionary=DICTIONARY_COLUMNS)
        except OSError as exc:
            raise SinkBackpressureError(f"cannot write Parquet file {final}: {exc}", retry_after_s=2.0) from None
        self.files_written += 1
        self.rows_written += len(rows)
        return final

    def _write_local(self, table: pa.Table, folder: str, final: str) -> None:
        tmp = f"{folder}/.{os.path.basename(final)}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(table, tmp, compression=self.settings.compression, use_dictionary=DICTIONARY_COLUMNS)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
