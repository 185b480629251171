"""`LexicalIndex`: BM25 (bm25s) over one index's documents in the lake, kept fresh by the feed.

Each document is analyzed once, when its newest record first appears; its terms are kept, so a
refresh analyzes only what changed and rebuilds the BM25 matrix from terms already known (bm25s
has no incremental update: a rebuild costs ~80 µs a document here, done off the search path and
swapped in whole). A search reads one built matrix from start to end, never a half-made one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import bm25s
import numpy as np

from pipelines.config import EmbedworkerSettings
from pipelines.lexical import snapshot
from pipelines.lexical.analyzer import KoreanEnglishAnalyzer
from pipelines.lexical.lake_feed import Key, LakeDocumentFeed

log = logging.getLogger("embedworker.lexical")


@dataclass
class LexicalHit:
    id: str
    score: float
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class _Built:
    retriever: bm25s.BM25 | None
    ids: list[str]
    attrs: list[dict]
    version: int | None
    built_at: float


class LexicalIndex:
    """One index's lexical side. Cheap to construct; `refresh()` (or `load_snapshot()`) fills it.
    `refresh` runs in one thread at a time (the CLI's, or the service's refresher); `search` may
    run in any thread meanwhile."""

    def __init__(self, settings: EmbedworkerSettings, index: str, analyzer: KoreanEnglishAnalyzer | None = None):
        self.settings, self.index = settings, index
        self.analyzer = analyzer or KoreanEnglishAnalyzer()
        self.feed = LakeDocumentFeed(settings, index)
        self.docs: dict[str, tuple[Key, list[str], dict]] = {}
        self.keep_passages = settings.search.reranker is not None
        self.passages: dict[str, str] = {}  # id -> title and the start of the text, for a reranker
        self._built = _Built(None, [], [], None, 0.0)
        self._lock = threading.Lock()
        self.without_text = 0
        self._saved: tuple[int | None, float] = (None, 0.0)  # the version and time of the newest snapshot
        self.last = {"analyzed": 0, "removed": 0, "files_read": 0, "refresh_s": 0.0, "build_s": 0.0}

    @property
    def version(self) -> int | None:
        """The lake version the searchable matrix holds (None before the first build)."""
        return self._built.version

    @property
    def documents(self) -> int:
        return len(self._built.ids)

    def load_snapshot(self) -> int | None:
        """Start from the newest snapshot beside the lake, if any; returns its version."""
        fs = self.feed.filesystem()
        meta = snapshot.newest(fs, self.index) if fs is not None else None
        if meta is None:
            return None
        version = meta["version"]
        keys, docs, passages = snapshot.load(fs, self.index, version)
        if self.keep_passages and docs and not passages:
            log.info("the lexical snapshot of %s keeps no passages for the reranker: building from the lake", self.index)
            return None
        self._saved = (version, meta["saved_at"])
        with self._lock:
            self.docs = docs
            self.passages = passages if self.keep_passages else {}
            self.feed.restore(version, keys, {i: d[0] for i, d in docs.items()})
            self._build(version)
        return version

    def save_snapshot(self) -> str | None:
        """Save what is built now beside the lake (None when nothing was read yet)."""
        fs = self.feed.filesystem()
        with self._lock:
            if fs is None or self.feed.version is None:
                return None
            where = snapshot.save(fs, self.index, self.feed.version, self.feed.keys, self.docs, self.passages)
            self._saved = (self.feed.version, time.time())
            return where

    def save_due(self) -> bool:
        """Whether a snapshot should be saved now: the index moved past the last one saved or
        loaded, and that one is older than `search.snapshot_every_s` (or there is none)."""
        version, saved_at = self._saved
        return (self.feed.version is not None and self.feed.version != version
                and time.time() - saved_at >= self.settings.search.snapshot_every_s)

    def refresh(self) -> bool:
        """Read the lake's changes and rebuild if there were any; True when the searchable index
        moved to a newer version. Raises LakeError (the index keeps serving what it has)."""
        with self._lock:
            t0 = time.perf_counter()
            changes = self.feed.refresh()
            if changes is None:
                return False
            for doc_id in changes.removed:
                self.docs.pop(doc_id, None)
                self.passages.pop(doc_id, None)
            for doc in changes.upserts:
                text = f"{doc.title}\n{doc.text}"
                self.docs[doc.id] = (doc.key, self.analyzer.terms(text), doc.attrs)
                if self.keep_passages:
                    self.passages[doc.id] = text[:self.settings.search.rerank_max_chars]
            self.without_text += changes.without_text
            t1 = time.perf_counter()
            self._build(changes.version)
            self.last = {"analyzed": len(changes.upserts), "removed": len(changes.removed),
                         "files_read": changes.files_read, "refresh_s": round(t1 - t0, 3),
                         "build_s": round(time.perf_counter() - t1, 3)}
            return True

    def search(self, query: str, k: int, accept: Callable[[dict], bool] | None = None) -> list[LexicalHit]:
        """The k best documents for `query` by BM25 among those `accept` takes (all by default);
        only documents that share a term with the query."""
        built = self._built
        terms = [t for t in self.analyzer.terms(query) if built.retriever is not None and t in built.retriever.vocab_dict]
        if not terms:
            return []
        scores = built.retriever.get_scores(terms)
        matched = np.flatnonzero(scores > 0)
        order = matched[np.argsort(-scores[matched], kind="stable")]
        hits = []
        for i in order.tolist():
            if accept is None or accept(built.attrs[i]):
                hits.append(LexicalHit(built.ids[i], float(scores[i]), built.attrs[i]))
                if len(hits) == k:
                    break
        return hits

    def _build(self, version: int) -> None:
        ids = sorted(self.docs)
        retriever = None
        if ids:
            retriever = bm25s.BM25()
            retriever.index([self.docs[i][1] for i in ids], show_progress=False)
        self._built = _Built(retriever, ids, [self.docs[i][2] for i in ids], version, time.time())
