"""The lexical index saved beside the lake, so that a new process (a serve replica, the CLI)
starts from it and reads only the lake's versions after it.

    {lake}/_lexical/{index}/{version:012d}/keys.parquet   the feed's key columns (which rows, which files)
    {lake}/_lexical/{index}/{version:012d}/docs.parquet   each document's record, terms and attributes
    {lake}/_lexical/{index}/{version:012d}/_SUCCESS       written last: the snapshot is whole

Written through the table's own filesystem (local or object storage, with `parquet.s3`'s
settings), under a folder Delta ignores (vacuum keeps it). A snapshot is named by the lake
version it holds, so two processes saving the same version write the same thing. The writer
keeps the newest `KEEP` snapshots. A snapshot made by another analyzer version is not read.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.lexical.lake_feed import KEYS_SCHEMA

log = logging.getLogger("embedworker.lexical")

ANALYZER_VERSION = "1"  # bump when the analyzer's terms change: older snapshots are then rebuilt
KEEP = 2
DOCS_SCHEMA = pa.schema([("id", pa.string()), ("kafka_topic", pa.string()), ("kafka_partition", pa.int32()),
                         ("kafka_offset", pa.int64()), ("terms", pa.list_(pa.string())), ("attrs", pa.string()),
                         ("passage", pa.string())])


def folder(index: str) -> str:
    return f"_lexical/{index}"


def save(fs: pafs.FileSystem, index: str, version: int, keys: pa.Table, docs: dict, passages: dict) -> str:
    """Write the snapshot of `version`; `docs` maps id -> (key, terms, attrs), `passages` id -> the
    text kept for a reranker (empty without one). Returns its folder."""
    where = f"{folder(index)}/{version:012d}"
    ids = list(docs)
    table = pa.table({
        "id": ids,
        "kafka_topic": [docs[i][0][0] for i in ids],
        "kafka_partition": [docs[i][0][1] for i in ids],
        "kafka_offset": [docs[i][0][2] for i in ids],
        "terms": [docs[i][1] for i in ids],
        "attrs": [orjson.dumps(docs[i][2]).decode() for i in ids],
        "passage": [passages.get(i) for i in ids],
    }, schema=DOCS_SCHEMA)
    for name, data in (("keys.parquet", keys.cast(KEYS_SCHEMA)), ("docs.parquet", table)):
        with fs.open_output_stream(f"{where}/{name}") as out:
            pq.write_table(data, out, compression="zstd")
    meta = {"version": version, "analyzer": ANALYZER_VERSION, "documents": len(ids), "saved_at": time.time()}
    with fs.open_output_stream(f"{where}/_SUCCESS") as out:  # a one-row Parquet file: what every store writes
        pq.write_table(pa.Table.from_pylist([meta]), out)
    for old in versions(fs, index)[:-KEEP]:
        _remove(fs, f"{folder(index)}/{old:012d}")
    return where


def versions(fs: pafs.FileSystem, index: str) -> list[int]:
    """The versions of whole snapshots of the current analyzer, oldest first."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder(index), allow_not_found=True, recursive=True))
    except FileNotFoundError:
        return []
    found = []
    for info in infos:
        parts = info.path.rstrip("/").split("/")
        if parts[-1] == "_SUCCESS" and parts[-2].isdigit():
            found.append(int(parts[-2]))
    return sorted(v for v in found if _analyzer(fs, index, v) == ANALYZER_VERSION)


def newest(fs: pafs.FileSystem, index: str) -> dict | None:
    """The newest whole snapshot's metadata (version, documents, saved_at), or None."""
    found = versions(fs, index)
    if not found:
        return None
    return _meta(fs, index, found[-1])


def load(fs: pafs.FileSystem, index: str, version: int) -> tuple[pa.Table, dict, dict]:
    """The keys table, the documents (id -> (key, terms, attrs)) and the passages of one snapshot."""
    where = f"{folder(index)}/{version:012d}"
    with fs.open_input_file(f"{where}/keys.parquet") as f:
        keys = pq.read_table(f)
    with fs.open_input_file(f"{where}/docs.parquet") as f:
        table = pq.read_table(f)
    docs, passages = {}, {}
    for r in table.to_pylist():
        if r.get("passage") is not None:
            passages[r["id"]] = r["passage"]
        terms = [sys.intern(t) for t in r["terms"]]
        docs[r["id"]] = ((r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]), terms, orjson.loads(r["attrs"]))
    return keys, docs, passages


def _meta(fs: pafs.FileSystem, index: str, version: int) -> dict:
    with fs.open_input_file(f"{folder(index)}/{version:012d}/_SUCCESS") as f:
        return pq.read_table(f).to_pylist()[0]


def _analyzer(fs: pafs.FileSystem, index: str, version: int) -> str | None:
    try:
        return _meta(fs, index, version).get("analyzer")
    except (OSError, pa.ArrowException, IndexError):
        return None


def _remove(fs: pafs.FileSystem, where: str) -> None:
    try:
        for info in fs.get_file_info(pafs.FileSelector(where, allow_not_found=True, recursive=True)):
            if info.type == pafs.FileType.File:
                fs.delete_file(info.path)
        fs.delete_dir(where)
    except OSError as exc:  # an old snapshot left behind costs space only; the next save tries again
        log.info("could not remove the old lexical snapshot %s: %s", where, exc)
