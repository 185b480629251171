"""Dense, lexical or hybrid search, the same for the CLI, the query service and the eval.

Hybrid takes `search.candidates` hits (at least k) from each side — the vector set's VSIM and
the lake's BM25 index — and fuses them by reciprocal rank: a document at rank r of a side adds
that side's weight / (rrf_k + r). Ranks, not scores, are fused: a cosine and a BM25 score are on
different scales. One filter expression filters both sides (Redis evaluates it on the vector
side, `filters.compile_filter` on the lexical side). Every hit says how it was ranked
(`explain`: dense rank and score, lexical rank and score, the fused score).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.config import EmbedworkerSettings, SearchSettings
from pipelines.lexical.follower import open_lexical
from pipelines.lexical.index import LexicalHit, LexicalIndex
from pipelines.serving.filters import compile_filter
from pipelines.serving.reranker import CrossEncoderReranker, reranker_from
from pipelines.serving.search import Searcher, SearchError, SearchHit, VectorSetIndex, hit_from_attributes

MODES = ("dense", "lexical", "hybrid")


class NoLexicalIndexError(SearchError):
    """Lexical or hybrid search was asked for where there is no lexical index (the service answers 400)."""


class LexicalNotReadyError(SearchError):
    """A lexical search came before the index's first build from the lake (the service answers 503)."""


def lexical_possible(settings: EmbedworkerSettings) -> bool:
    """Whether this configuration can have a lexical index: the lake is a Delta table with text."""
    p = settings.parquet
    return settings.search.lexical and p.enabled and p.format == "delta" and p.include_text


def choose_mode(requested: str | None, settings: EmbedworkerSettings) -> str:
    """The mode a search runs in: the one asked for (or `search.mode`), `auto` resolved.
    Raises NoLexicalIndexError naming the settings when lexical is asked for and impossible."""
    mode = requested or settings.search.mode
    possible = lexical_possible(settings)
    if mode == "auto":
        return "hybrid" if possible else "dense"
    if mode != "dense" and not possible:
        raise NoLexicalIndexError(f"{mode} search needs the lexical index, built from the lake's text: set "
                                  "search.lexical: true, parquet.format: delta and parquet.include_text: true")
    return mode


def run_search(mode: str, query: str, vector: np.ndarray | None, k: int, filter: str | None, ef: int | None,
               searcher: Searcher, index: VectorSetIndex | None, lexical: LexicalIndex | None,
               s: SearchSettings, reranker: CrossEncoderReranker | None = None) -> list[SearchHit]:
    """The k best documents in `mode`. `vector` is the query's embedding (None in lexical mode);
    `lexical` None in hybrid mode (its index not built yet) gives the dense ranking alone; a
    `reranker` reorders the first `search.rerank_top`. Raises FilterError,
    RedisUnavailableError, SearchError (RerankerError)."""
    wanted = max(k, s.rerank_top) if reranker is not None else k
    n = max(wanted, s.candidates) if mode == "hybrid" else wanted
    dense = searcher.search_vector(vector, n, filter, ef, index) if mode != "lexical" else []
    if mode == "dense" or lexical is None:
        hits = [_explained(h, dense_rank=r) for r, h in enumerate(dense[:wanted], 1)]
    else:
        words = lexical.search(query, n, compile_filter(filter) if filter else None)
        if mode == "lexical":
            hits = [_explained(_from_lexical(h), lexical_rank=r) for r, h in enumerate(words, 1)]
        else:
            hits = fuse(dense, words, wanted, s)
    if reranker is None:
        return hits[:k]
    return reranker.rerank(query, hits, lexical.passages if lexical is not None else {}, s, k)


@dataclass
class TextSearch:
    """What a one-off search (the CLI, the demo) needs, opened once by `open`: the Searcher (set
    up), the mode, the lexical index at the lake's newest version (none in dense mode) and the
    reranker; calling it searches a text."""

    settings: EmbedworkerSettings
    searcher: Searcher
    mode: str
    lexical: LexicalIndex | None
    reranker: CrossEncoderReranker | None

    @classmethod
    def open(cls, settings: EmbedworkerSettings, mode: str | None = None, say=lambda message: None) -> TextSearch:
        """Raises NoLexicalIndexError, SearchError, LakeError, RerankerError; `say` hears that a first
        lexical build from the whole lake is starting."""
        mode = choose_mode(mode, settings)
        searcher = Searcher(settings)
        searcher.setup()
        lexical = open_lexical(settings, searcher.index.name, say) if mode != "dense" else None
        return cls(settings, searcher, mode, lexical, reranker_from(settings))

    def __call__(self, query: str, k: int = 10, filter: str | None = None, ef: int | None = None) -> list[SearchHit]:
        vector = self.searcher.encoder.encode_queries([query])[0] if self.mode != "lexical" else None
        return run_search(self.mode, query, vector, k, filter, ef, self.searcher, self.searcher.index, self.lexical,
                          self.settings.search, self.reranker)


def fuse(dense: list[SearchHit], words: list[LexicalHit], k: int, s: SearchSettings) -> list[SearchHit]:
    """Reciprocal-rank fusion of the two rankings; ties keep the dense order first."""
    fused: dict[str, SearchHit] = {}
    for rank, hit in enumerate(dense, 1):
        fused[hit.id] = _explained(hit, dense_rank=rank)
        fused[hit.id].score = s.dense_weight / (s.rrf_k + rank)
    for rank, word_hit in enumerate(words, 1):
        hit = fused.get(word_hit.id)
        if hit is None:
            hit = fused[word_hit.id] = _from_lexical(word_hit)
            hit.score = 0.0
            hit.explain = {"dense_rank": None, "dense_score": None}
        hit.explain.update(lexical_rank=rank, lexical_score=round(word_hit.score, 4))
        hit.score += s.lexical_weight / (s.rrf_k + rank)
    for hit in fused.values():
        hit.explain.setdefault("lexical_rank", None)
        hit.explain.setdefault("lexical_score", None)
        hit.score = round(hit.score, 6)
        hit.explain["fused"] = hit.score
    return sorted(fused.values(), key=lambda h: -h.score)[:k]


def _explained(hit: SearchHit, dense_rank: int | None = None, lexical_rank: int | None = None) -> SearchHit:
    if dense_rank is not None:
        hit.explain = {"dense_rank": dense_rank, "dense_score": round(hit.score, 4)}
    else:
        hit.explain = {"lexical_rank": lexical_rank, "lexical_score": round(hit.score, 4)}
    return hit


def _from_lexical(hit: LexicalHit) -> SearchHit:
    return hit_from_attributes(hit.id, hit.score, dict(hit.attrs))
