"""The Parquet dataset's layout, shared by the sink, status and eval: folders, file names, the
schema, listing the finished files, and the rows -> Arrow table conversion.

    {path}/index={index}/dt=2026-11-27/{topic}-p{partition:05d}-o{first:019d}-{last:019d}.parquet

Files of the layout before the index folder (`{path}/dt=.../...`) have no `index=` in their path
(`index_of` is None); their `embedworker.model` metadata says which model wrote them.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from workers.errors import SinkBackpressureError
from workers.sinks.base import SinkRecord

INDEX_FOLDER = re.compile(r"(?:^|/)index=(?P<index>[^/]+)/")
FILE_NAME = re.compile(r"^(?P<topic>.+)-p(?P<partition>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.parquet$")
SCHEMA_VERSION = "1"
# Dictionary encoding only where values repeat: on the embeddings it costs more than half the
# write time and makes files larger (measured: 18 -> 7.5 us per row, 1,548 -> 1,424 bytes).
DICTIONARY_COLUMNS = ["model", "source", "lang", "op", "kafka_topic"]


def parquet_schema(dim: int) -> pa.Schema:
    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("id", pa.string()), ("chunk", pa.int32()), ("embedding", pa.list_(pa.float32(), dim)),
        ("model", pa.string()), ("title", pa.string()), ("url", pa.string()), ("source", pa.string()),
        ("lang", pa.string()), ("published_at", ts), ("op", pa.string()), ("attrs", pa.string()),
        ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
        ("ingested_at", ts),
    ])


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"{topic}-p{partition:05d}-o{first:019d}-{last:019d}.parquet"


def open_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the root inside it, for a local path or a URI (s3://, gs://, ...)."""
    if "://" in path and not path.startswith("file://"):
        return pafs.FileSystem.from_uri(path)
    local = os.path.abspath(path.removeprefix("file://"))
    return pafs.LocalFileSystem(), local


def index_of(path: str) -> str | None:
    """The index a file belongs to, from its `index=` folder; None for the layout before it."""
    m = INDEX_FOLDER.search(path)
    return m["index"] if m else None


def file_model(fs: pafs.FileSystem, path: str) -> str:
    """The model that wrote a file (its `embedworker.model` metadata; "" when absent)."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).schema_arrow.metadata or {}
    return meta.get(b"embedworker.model", b"").decode()


def list_files(fs: pafs.FileSystem, root: str) -> list[tuple[str, re.Match]]:
    """(path, name match) of every finished file under `root` (temporary files are skipped)."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise SinkBackpressureError(f"cannot list Parquet folder {root}: {exc}") from None
    out = []
    for info in infos:
        if info.type == pafs.FileType.File:
            m = FILE_NAME.match(info.base_name)
            if m and not info.base_name.startswith("."):
                out.append((info.path, m))
    return out


def records_table(rows: list[SinkRecord], schema: pa.Schema) -> pa.Table:
    """One Arrow table from the rows, column by column (vectors stacked in one copy;
    timestamps as integer microseconds, which keeps pyarrow away from its pandas path); the
    model column is the schema's `embedworker.model` metadata."""
    n, dim = len(rows), schema.field("embedding").type.list_size
    model_id = (schema.metadata or {}).get(b"embedworker.model", b"").decode()
    now = _micros(datetime.now(UTC))
    flat = np.zeros((n, dim), dtype=np.float32)
    missing = np.zeros(n, dtype=bool)
    for i, r in enumerate(rows):
        if r.vector is None:
            missing[i] = True
        else:
            flat[i] = r.vector
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim,
                                                   mask=pa.array(missing) if missing.any() else None)
    ts = schema.field("ingested_at").type
    columns = [
        pa.array([r.id for r in rows], pa.string()),
        pa.array(np.fromiter((r.chunk for r in rows), np.int32, n)),
        embeddings,
        pa.array([model_id] * n, pa.string()),
        pa.array([r.title for r in rows], pa.string()), pa.array([r.url for r in rows], pa.string()),
        pa.array([r.source for r in rows], pa.string()), pa.array([r.lang for r in rows], pa.string()),
        pa.array([_micros(r.published_at) for r in rows], pa.int64()).cast(ts),
        pa.array([r.op for r in rows], pa.string()),
        pa.array([json.dumps(r.attrs, ensure_ascii=False) if r.attrs else None for r in rows], pa.string()),
        pa.array([r.topic for r in rows], pa.string()),
        pa.array(np.fromiter((r.partition for r in rows), np.int32, n)),
        pa.array(np.fromiter((r.offset for r in rows), np.int64, n)),
        pa.array([now if r.ingested_at is None else _micros(r.ingested_at) for r in rows], pa.int64()).cast(ts),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(ts: datetime | None) -> int | None:
    """Microseconds since the epoch (exact; naive datetimes are taken as UTC)."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
