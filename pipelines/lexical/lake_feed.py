"""What the lake holds for one index, read by difference: the lexical index's only input.

The Delta table's log lists the data files of the current version. The feed remembers which
files it has read and the key columns of their rows (id, source partition and offset, ingestion
time, op, chunk: tens of bytes a row); a refresh reads the key columns of the files that
appeared, forgets the rows of the files that went (retention, compaction, a restore), picks each
id's newest record again (`newest_positions`, the rule `restore` uses), and reads the text and
metadata only of the documents whose newest record changed. So a refresh costs what changed, a
deletion or an expiry removes the document, an update replaces it, and a compaction (the same
rows in new files) changes nothing. Rows written without their text (`parquet.include_text:
false`) cannot be searched by words and are counted as such.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
from deltalake.exceptions import DeltaError
from deltalake.fs import DeltaStorageHandler

from pipelines.config import EmbedworkerSettings
from pipelines.maintenance.lake_admin import LakeError, uri_of
from pipelines.maintenance.lake_scan import newest_positions
from workers.sinks.lake import open_table

log = logging.getLogger("embedworker.lexical")

KEY_COLUMNS = ["id", "chunk", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "op"]
KEYS_SCHEMA = pa.schema([("id", pa.string()), ("chunk", pa.int32()), ("kafka_topic", pa.string()),
                         ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64()),
                         ("ingested_at", pa.timestamp("us", tz="UTC")), ("op", pa.string()), ("_file", pa.string())])
DOC_COLUMNS = ["id", "kafka_topic", "kafka_partition", "kafka_offset", "title", "text", "url", "source", "lang",
               "published_at", "attrs"]

Key = tuple[str, int, int]  # the record a document was read from: topic, partition, offset


@dataclass
class LakeDocument:
    """A document's newest upsert: its words and the attributes a search hit shows and filters see
    (the same names and forms as the vector set's attributes: published_at in epoch seconds)."""

    id: str
    key: Key
    title: str
    text: str
    attrs: dict


@dataclass
class LakeChanges:
    """What changed since the previous refresh: documents to (re)index and ids to drop."""

    version: int
    upserts: list[LakeDocument] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    files_read: int = 0
    without_text: int = 0


class LakeDocumentFeed:
    """One index of the lake, followed. Cheap to construct; `refresh()` opens the table when
    first called. `state()` and `restore()` carry what it has read across processes (the
    snapshot)."""

    def __init__(self, settings: EmbedworkerSettings, index: str):
        self.settings, self.index = settings, index
        self.version: int | None = None
        self.keys = KEYS_SCHEMA.empty_table()
        self.winners: dict[str, Key] = {}
        self._table = None
        self._fs = None

    def restore(self, version: int, keys: pa.Table, winners: dict[str, Key]) -> None:
        """Continue from a snapshot: the next refresh reads only what changed after `version`."""
        self.version, self.keys, self.winners = version, keys.cast(KEYS_SCHEMA), dict(winners)

    def latest_version(self) -> int | None:
        """The table's newest version (None when there is no table yet). Raises LakeError when the
        store does not answer."""
        table = self._open()
        if table is None:
            return None
        try:
            table.update_incremental()
        except (DeltaError, OSError) as exc:
            raise LakeError(f"cannot read the lake's log at {self.settings.parquet.path}: {exc}") from None
        return table.version()

    def commit_time(self, version: int) -> float | None:
        """When `version` was committed (epoch seconds), from its commit info; None if not recorded."""
        table = self._open()
        try:
            found = table.history(max(1, table.version() - version + 1)) if table is not None else []
        except (DeltaError, OSError) as exc:
            raise LakeError(f"cannot read the lake's log at {self.settings.parquet.path}: {exc}") from None
        for info in found:
            if info.get("version") == version and info.get("timestamp"):
                return info["timestamp"] / 1000
        return None

    def refresh(self) -> LakeChanges | None:
        """Read the table's newest version; None when it is the one read last (or there is no
        table). Raises LakeError when the store does not answer: the index keeps what it has."""
        version = self.latest_version()
        if version is None or version == self.version:
            return None
        try:
            return self._changes(version)
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise LakeError(f"cannot read the lake at {self.settings.parquet.path}: {exc}") from None

    def filesystem(self):
        """The table's filesystem (local or object storage with `parquet.s3`'s options, rooted at
        the table), made once; None without a table."""
        if self._fs is None and self._open() is not None:
            handler = DeltaStorageHandler(uri_of(self.settings), self.settings.parquet.storage_options())
            self._fs = pafs.PyFileSystem(handler)
        return self._fs

    def _open(self):
        if self._table is None:
            try:
                self._table = open_table(uri_of(self.settings), self.settings.parquet.storage_options())
            except (DeltaError, OSError) as exc:
                raise LakeError(f"cannot open the lake at {self.settings.parquet.path}: {exc}") from None
        return self._table

    def _changes(self, version: int) -> LakeChanges:
        dataset = self._table.to_pyarrow_dataset()
        fragments = {f.path: f for f in dataset.get_fragments(filter=ds.field("index") == self.index)}
        known = set(pc.unique(self.keys["_file"]).to_pylist()) if self.keys.num_rows else set()
        added = [path for path in fragments if path not in known]
        gone = known - fragments.keys()
        keys = self.keys
        if gone:
            keys = keys.filter(pc.invert(pc.is_in(keys["_file"], pa.array(sorted(gone), pa.string()))))
        parts = [keys]
        for path in added:
            rows = fragments[path].to_table(columns=KEY_COLUMNS)
            parts.append(rows.append_column("_file", pa.array([path] * rows.num_rows, pa.string())).cast(KEYS_SCHEMA))
        keys = pa.concat_tables(parts) if added else keys
        changes = LakeChanges(version=version, files_read=len(added))
        newest = keys.take(pa.array(newest_positions(keys))) if keys.num_rows else keys
        first = newest.filter(pc.equal(newest["chunk"], 0)).to_pylist()
        live = {r["id"]: r for r in first if r["op"] == "upsert"}
        changes.removed = [doc_id for doc_id in self.winners if doc_id not in live]
        wanted = {doc_id: r for doc_id, r in live.items()
                  if self.winners.get(doc_id) != (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"])}
        if wanted:
            changes.upserts, changes.without_text = self._documents(fragments, wanted)
            read = {d.id for d in changes.upserts}  # a newest record without text: its old words go
            changes.removed += [doc_id for doc_id in wanted if doc_id not in read and doc_id in self.winners]
        self.keys, self.version = keys, version
        for doc_id in changes.removed:
            self.winners.pop(doc_id, None)
        self.winners.update({d.id: d.key for d in changes.upserts})
        return changes

    def _documents(self, fragments: dict, wanted: dict[str, dict]) -> tuple[list[LakeDocument], int]:
        """The text and attributes of the wanted records, read from the files that hold them."""
        by_file: dict[str, list[str]] = {}
        for doc_id, r in wanted.items():
            by_file.setdefault(r["_file"], []).append(doc_id)
        docs, without_text = [], 0
        for path, ids in by_file.items():
            table = fragments[path].to_table(
                columns=DOC_COLUMNS, filter=(ds.field("id").isin(ids)) & (ds.field("chunk") == 0))
            for r in table.to_pylist():
                w = wanted.get(r["id"])
                key = (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"])
                if w is None or key != (w["kafka_topic"], w["kafka_partition"], w["kafka_offset"]):
                    continue
                if r["text"] is None:
                    without_text += 1
                    continue
                docs.append(LakeDocument(r["id"], key, r["title"] or "", r["text"], _attributes(r)))
        return docs, without_text


def _attributes(r: dict) -> dict:
    attrs = orjson.loads(r["attrs"]) if r["attrs"] else {}
    for name in ("title", "url", "source", "lang"):
        if r[name]:
            attrs[name] = r[name]
    if r["published_at"] is not None:
        attrs["published_at"] = int(r["published_at"].timestamp())
    return attrs
