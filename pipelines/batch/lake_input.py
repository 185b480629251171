"""The lake as backfill input: re-embedding an index with a new model after Kafka's retention
has removed the records, from the text the lake keeps (`parquet.include_text`).

`embedworker backfill --input <table path or s3://…> [--source-index NAME]` exports the newest
record of every document of the source index (its text, title and metadata; a deletion stays
a deletion) as JSONL files of the backfill's state folder, once, and the
backfill runs over them as over any JSONL input: units, done markers, resume, rejects.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipelines.config import EmbedworkerSettings
from pipelines.maintenance.lake_admin import LakeError
from pipelines.maintenance.lake_scan import scan_newest
from workers.sinks.lake import open_table

COLUMNS = ["id", "chunk", "op", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "text", "title", "url",
           "source", "lang", "published_at", "attrs"]
ROWS_PER_FILE = 50_000


def is_lake(path: str, settings: EmbedworkerSettings) -> bool:
    """Whether a backfill input names a Delta table (rather than a glob of files)."""
    if "://" not in path or path.startswith("file://"):
        return os.path.isdir(os.path.join(path.removeprefix("file://"), "_delta_log"))
    if any(c in path for c in "*?["):
        return False
    options = settings.parquet.storage_options() if path.startswith("s3://") else None
    try:
        return DeltaTable.is_deltatable(path, storage_options=options)
    except (OSError, DeltaError):
        return False


def export_documents(settings: EmbedworkerSettings, path: str, index: str | None, out_dir: str,
                     exclude: str | None = None) -> list[str]:
    """Write the newest record of each document of `index` (default: the table's only index
    other than `exclude`, the backfill's target) as JSONL files under `out_dir`/index={index}/v{version}/
    and return their paths. An export made before for that index is used again (so a second run
    of the same backfill finds its units done, though its own commits moved the table on).
    Raises LakeError naming the indexes when `index` is missing or ambiguous, or when the table
    keeps no text."""
    import fsspec

    options = settings.parquet.storage_options() if path.startswith("s3://") else None
    table = open_table(path if "://" in path else os.path.abspath(path), options)
    if table is None:
        raise LakeError(f"no Delta table at {path}")
    dataset = table.to_pyarrow_dataset()
    if "text" not in dataset.schema.names:
        raise LakeError(f"the table at {path} keeps no text: re-embed from the source")
    indexes = sorted(set(pc.unique(pa.table(table.get_add_actions(flatten=True))["partition.index"]).to_pylist()))
    sources = [i for i in indexes if i != exclude]
    if index is None and len(sources) == 1:
        index = sources[0]
    if index not in indexes:
        raise LakeError(f"index {index!r} is not in the table at {path}; it holds: {', '.join(indexes) or 'nothing'} "
                        "(name one with --source-index)")
    fs, root = fsspec.core.url_to_fs(out_dir.rstrip("/"))
    earlier = sorted(fs.glob(f"{root}/index={index}/v*/_SUCCESS"), key=lambda p: int(p.rsplit("/", 2)[-2][1:]))
    inner = earlier[-1].rsplit("/", 1)[0] if earlier else f"{root}/index={index}/v{table.version()}"
    done = f"{inner}/_SUCCESS"
    if not fs.exists(done):
        documents = _export(dataset, index, fs, inner)
        with fs.open(done, "w") as f:
            f.write(json.dumps({"table": path, "version": table.version(), "index": index, "documents": documents}))
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = sorted(p for p in fs.glob(f"{inner}/part-*.jsonl"))
    return [p if protocol in ("file", "local") else f"{protocol}://{p}" for p in found]


def _export(dataset, index: str, fs, inner: str) -> int:
    """The newest record of each document (its first chunk holds the text) as JSONL files of
    ROWS_PER_FILE, read a batch at a time (pipelines/maintenance/lake_scan.py). LakeError when
    a document kept no text; nothing is marked done then."""
    fs.makedirs(inner, exist_ok=True)
    documents, part, out = 0, 0, None
    try:
        for rows in scan_newest(dataset, index).batches(COLUMNS):
            rows = rows.filter(pc.equal(rows["chunk"], 0))
            textless = rows.filter(pc.and_(pc.equal(rows["op"], "upsert"), pc.is_null(rows["text"]))).num_rows
            if textless:
                raise LakeError(f"documents of index {index!r} have no text in the lake (written with "
                                "parquet.include_text off): re-embed them from their source")
            for r in rows.to_pylist():
                if out is None or documents % ROWS_PER_FILE == 0:
                    if out is not None:
                        out.close()
                    out = fs.open(f"{inner}/part-{part:05d}.jsonl", "w", encoding="utf-8")
                    part += 1
                out.write(json.dumps(_document(r), ensure_ascii=False) + "\n")
                documents += 1
        if out is None:  # an index of no documents: one empty file, as before
            fs.open(f"{inner}/part-00000.jsonl", "w", encoding="utf-8").close()
    finally:
        if out is not None:
            out.close()
    return documents


def _document(r: dict) -> dict:
    if r["op"] == "delete":
        return {"id": r["id"], "op": "delete"}
    doc = {"id": r["id"], "text": r["text"] or ""}
    for name in ("title", "url", "source", "lang"):
        if r[name]:
            doc[name] = r[name]
    if r["published_at"] is not None:
        doc["published_at"] = r["published_at"].isoformat().replace("+00:00", "Z")
    if r["attrs"]:
        doc["attrs"] = json.loads(r["attrs"])
    return doc
