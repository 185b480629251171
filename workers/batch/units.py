"""Backfill work units: deterministic slices of input files, and the actor that embeds them.

A unit is a byte range of a JSONL file (cut at line starts) or one row group of a Parquet file.
Units are derived from the files alone, so a re-run of the same command sees the same units;
each finished unit leaves a marker in the job's state folder, written after its Redis writes
and its Parquet file are durable, and a re-run skips marked units. A unit's Parquet file has a
fixed name, so a unit redone after a crash replaces its file instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import fsspec
import pyarrow.parquet as pq

from workers.documents import Document, DocumentLimits, RecordOrigin, Rejection, parse_record
from workers.encoding.encoder import Encoder
from workers.settings import (
    BatchingSettings,
    DocumentSettings,
    ModelSettings,
    ParquetSettings,
    RedisSettings,
    model_slug,
)
from workers.sinks.base import retry_backpressure, sink_records
from workers.sinks.lake import new_parquet_sink
from workers.sinks.redis_vset import RedisVectorSetSink


@dataclass(frozen=True)
class Unit:
    key: str          # stable id of this slice of this version of the file
    path: str         # file URI
    kind: str         # "jsonl" or "parquet"
    file_index: int   # position of the file in the sorted input list
    start: int        # jsonl: first byte; parquet: row group index
    end: int          # jsonl: end byte (exclusive); parquet: row group index + 1
    first_row: int    # parquet: rows before this row group (record offsets); jsonl: = start


def plan_units(paths: list[str], unit_bytes: int) -> list[Unit]:
    """Cut the input files into units (a pure function of the files' names, sizes and mtimes)."""
    units = []
    for index, path in enumerate(paths):
        fs, inner = fsspec.core.url_to_fs(path)
        info = fs.info(inner)
        size, stamp = int(info.get("size") or 0), str(info.get("mtime") or info.get("LastModified") or "")
        kind = "parquet" if path.endswith(".parquet") else "jsonl"
        if kind == "parquet":
            with fs.open(inner, "rb") as f:
                meta = pq.ParquetFile(f).metadata
            before = 0
            for rg in range(meta.num_row_groups):
                units.append(Unit(_key(path, size, stamp, rg), path, kind, index, rg, rg + 1, before))
                before += meta.row_group(rg).num_rows
        else:
            for start in range(0, max(size, 1), unit_bytes):
                end = min(size, start + unit_bytes)
                units.append(Unit(_key(path, size, stamp, start), path, kind, index, start, end, start))
    return units


def _key(path: str, size: int, stamp: str, start: int) -> str:
    return hashlib.sha1(f"{path}|{size}|{stamp}|{start}".encode()).hexdigest()[:20]


def read_unit(unit: Unit) -> list[tuple[int, bytes | None]]:
    """(offset, raw value) of every record in the unit. JSONL offsets are byte positions of
    line starts; a line belongs to the unit its first byte falls in."""
    fs, inner = fsspec.core.url_to_fs(unit.path)
    if unit.kind == "parquet":
        with fs.open(inner, "rb") as f:
            rows = pq.ParquetFile(f).read_row_group(unit.start).to_pylist()
        return [(unit.first_row + i, json.dumps(row, ensure_ascii=False, default=_json_default).encode())
                for i, row in enumerate(rows)]
    out = []
    with fs.open(inner, "rb") as f:
        pos = unit.start
        if pos > 0:
            f.seek(pos - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line straddling the start belongs to the previous unit
            pos = f.tell()
        else:
            f.seek(0)
        while pos < unit.end:
            line = f.readline()
            if not line:
                break
            value = line.rstrip(b"\r\n")
            if value.strip():
                out.append((pos, value))
            pos += len(line)
    return out


def _json_default(value):
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def write_json_atomic(path: str, payload) -> None:
    fs, inner = fsspec.core.url_to_fs(path)
    fs.makedirs(os.path.dirname(inner), exist_ok=True)
    tmp = f"{inner}.{os.getpid()}.tmp"
    with fs.open(tmp, "w") as f:
        json.dump(payload, f, ensure_ascii=False, default=str)
    fs.mv(tmp, inner)


class UnitEmbedder:
    """Ray Data callable class: embeds whole units. Built on each actor of the pool (cheap);
    the model and connections open on the first call."""

    def __init__(self, model: ModelSettings, documents: DocumentSettings, redis: RedisSettings,
                 parquet: ParquetSettings, batching: BatchingSettings, state_dir: str, job_id: str, day: str,
                 max_message_bytes: int):
        self.model_settings, self.redis_settings, self.parquet_settings = model, redis, parquet
        self.limits = DocumentLimits(max_record_bytes=max_message_bytes, **documents.model_dump())
        self.batching = batching
        self.state_dir, self.job_id, self.day = state_dir, job_id, day
        self._ready = False

    def _setup(self) -> None:
        m = self.model_settings
        self.parquet_settings.s3.configure_fsspec()  # s3:// inputs and state folders
        self.encoder = Encoder.from_settings(m, self.batching)
        self.redis = None
        if self.redis_settings.enabled:
            self.redis = RedisVectorSetSink(self.redis_settings, model_slug(m.name), m.name, self.encoder.dim,
                                            m.document_prefix)
            self.redis.setup()
        self.parquet = None
        if self.parquet_settings.enabled:
            self.parquet = new_parquet_sink(self.parquet_settings, self.redis_settings.index_name(m.name), m.name,
                                       self.encoder.revision, self.encoder.dim, m.document_prefix)
            self.parquet.setup()
        self._ready = True

    def __call__(self, batch: dict) -> dict:
        if not self._ready:
            self._setup()
        stats: dict[str, list] = {k: [] for k in ("unit", "records", "embedded", "deleted", "rejected", "seconds")}
        for raw in batch["unit"]:
            unit = Unit(**json.loads(raw))
            s = self.process(unit)
            for k in stats:
                stats[k].append(s[k])
        return stats

    def process(self, unit: Unit) -> dict:
        t0 = time.perf_counter()
        topic = f"backfill.{self.job_id}"
        docs: list[Document] = []
        deletes: list[Document] = []
        rejects: list[Rejection] = []
        raw = read_unit(unit)
        for offset, value in raw:
            result = parse_record(value, RecordOrigin(topic, unit.file_index, offset), self.limits)
            if isinstance(result, Rejection):
                rejects.append(result)
            else:
                (deletes if result.op == "delete" else docs).append(result)
        now = datetime.now(UTC)
        vectors, doc_index, chunk_no = self.encoder.encode_document_chunks(
            [d.embed_text(self.model_settings.text_template) for d in docs])
        per_doc: dict[int, dict] = {}
        for vec, d, c in zip(vectors, doc_index, chunk_no):
            per_doc.setdefault(int(d), {})[int(c)] = vec
        index_of = {id(d): i for i, d in enumerate(docs)}
        ordered = []
        for d in sorted(docs + deletes, key=lambda x: x.origin.offset):
            vecs = None if d.op == "delete" else per_doc[index_of[id(d)]]
            ordered.extend(sink_records(d, vecs, self.model_settings.chunking.enabled, now))
        if raw:
            self._write(unit, topic, ordered, raw[0][0], raw[-1][0])
        self._write_rejects(unit, rejects)
        write_json_atomic(f"{self.state_dir}/units/{unit.key}.json",
                          {"unit": asdict(unit), "records": len(docs) + len(deletes) + len(rejects),
                           "embedded": len(docs), "deleted": len(deletes), "rejected": len(rejects),
                           "finished_at": now.isoformat()})
        return {"unit": unit.key, "records": len(docs) + len(deletes) + len(rejects), "embedded": len(docs),
                "deleted": len(deletes), "rejected": len(rejects), "seconds": time.perf_counter() - t0}

    def _write(self, unit: Unit, topic: str, records, first: int, last: int) -> None:
        """Redis, then the unit's Parquet file (named by its first and last record offsets);
        retried while a sink reports backpressure (`retry_backpressure`)."""

        def write() -> None:
            if self.redis is not None:
                self.redis.write(records)
            if self.parquet is not None and records:
                self.parquet.write_rows(records, topic, unit.file_index, first, last, self.day)

        retry_backpressure(write)

    def _write_rejects(self, unit: Unit, rejects: list[Rejection]) -> None:
        if not rejects:
            return
        lines = [json.dumps({"source": unit.path, "offset": r.origin.offset, "code": r.code, "message": r.message,
                             "value": None if r.value is None else r.value.decode("utf-8", "replace")[:65536]},
                            ensure_ascii=False) for r in rejects]
        path = f"{self.state_dir}/rejects/{unit.key}.jsonl"
        fs, inner = fsspec.core.url_to_fs(path)
        fs.makedirs(os.path.dirname(inner), exist_ok=True)
        with fs.open(inner, "w") as f:
            f.write("\n".join(lines) + "\n")
