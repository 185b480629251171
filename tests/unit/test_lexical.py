"""The lexical side of search, over a real Delta table in a temporary folder (no services): Korean
by morphemes, the index following the lake (updates, deletions, a retention delete, a
compaction, another index beside it, rows without text), its snapshot, filters with Redis's
meaning, and the fusion of two rankings."""

from datetime import UTC, datetime

import numpy as np
import pytest
from deltalake import DeltaTable

from pipelines.config import EmbedworkerSettings
from pipelines.lexical.analyzer import KoreanEnglishAnalyzer
from pipelines.lexical.follower import open_lexical
from pipelines.lexical.index import LexicalHit, LexicalIndex
from pipelines.serving.filters import compile_filter
from pipelines.serving.hybrid import NoLexicalIndexError, choose_mode, fuse
from pipelines.serving.search import FilterError, SearchHit
from workers.settings import ParquetSettings
from workers.sinks.base import SinkRecord
from workers.sinks.lake import DeltaLakeSink

DAY = datetime(2026, 11, 28, 9, tzinfo=UTC)
ANALYZER = KoreanEnglishAnalyzer()  # Kiwi's model loads once for the module


class Lake:
    """Writes records into a Delta table the way a replica does (one commit a write)."""

    def __init__(self, root, include_text=True):
        self.root, self.include_text, self.offset = str(root), include_text, 0

    def write(self, *docs, index="v1"):
        records = []
        for doc_id, text, *rest in docs:
            attrs = rest[0] if rest else {}
            records.append(SinkRecord(id=doc_id, op="delete" if text is None else "upsert", topic="news", partition=0,
                                      offset=self.offset, vector=np.full(4, 0.5, np.float32), title=attrs.get("title"),
                                      text=text, lang=attrs.get("lang", "ko"), source=attrs.get("source"),
                                      published_at=attrs.get("published_at"), ingested_at=DAY))
            self.offset += 1
        sink = DeltaLakeSink(ParquetSettings(path=self.root, include_text=self.include_text), index, "m", None, 4,
                             "passage: ")
        sink.setup()
        sink.assign([("news", 0)])
        sink.write(records)
        sink.close()

    def index(self, name="v1") -> LexicalIndex:
        return LexicalIndex(EmbedworkerSettings(parquet={"path": self.root}), name, ANALYZER)


def ids(hits):
    return [h.id for h in hits]


def test_korean_is_searched_by_morphemes_and_latin_words_and_numbers_whole():
    terms = ANALYZER.terms("한국은행이 기준금리를 연 3.0%로 동결했다. 삼성전자는 HBM3E를 1,400원에 팔았다.")
    assert {"한국은행", "기준", "금리", "동결", "삼성전자"} <= set(terms)
    assert not {"이", "를", "했다", "는", "에"} & set(terms), "particles and endings are dropped"
    assert {"hbm3e", "hbm", "3.0", "3.0%", "1400", "1400원"} <= set(terms)
    assert ANALYZER.terms("the Bank of Korea's rate") == ["bank", "korea", "rate"]


def test_the_index_follows_updates_deletions_retention_and_compaction(tmp_path):
    lake = Lake(tmp_path)
    lake.write(("a", "한국은행이 기준금리를 동결했다."), ("b", "삼성전자가 HBM3E 양산을 시작했다."),
               ("c", "Samsung starts HBM mass production", {"lang": "en"}))
    lake.write(("z", "기준금리 인상 전망", {}), index="other")  # another index in the same table
    ix = lake.index()
    assert ix.refresh() and ix.documents == 3
    assert ids(ix.search("기준금리 동결", 5)) == ["a"]
    assert ids(ix.search("HBM 양산", 5)) == ["b", "c"]
    assert not ix.refresh(), "no new version: nothing to do"

    lake.write(("a", "물가 상승률이 둔화됐다."), ("b", None))  # an update and a deletion
    assert ix.refresh() and ix.last["analyzed"] == 1 and ix.last["removed"] == 1
    assert ids(ix.search("기준금리 동결", 5)) == [], "the old words of an updated document are gone"
    assert ids(ix.search("물가", 5)) == ["a"] and ids(ix.search("HBM 양산", 5)) == ["c"]

    DeltaTable(str(tmp_path)).optimize.compact()  # the same rows in new files: nothing to analyze
    assert ix.refresh() and ix.last["analyzed"] == 0 and ix.last["removed"] == 0 and ix.documents == 2

    DeltaTable(str(tmp_path)).delete("id = 'c'")  # what retention does to expired documents
    assert ix.refresh() and ids(ix.search("HBM", 5)) == [] and ix.documents == 1


def test_a_snapshot_starts_a_new_process_which_then_reads_only_what_is_new(tmp_path):
    lake = Lake(tmp_path)
    lake.write(("a", "태풍으로 제주 항공편이 결항됐다.", {"title": "제주 결항", "source": "yna"}))
    first = lake.index()
    first.refresh()
    assert first.save_snapshot() is not None
    lake.write(("b", "제주 공항 운항이 재개됐다."))

    second = lake.index()
    assert second.load_snapshot() == first.version and second.documents == 1
    assert second.refresh() and second.last["files_read"] == 1 and second.last["analyzed"] == 1
    hits = second.search("제주", 5)
    assert set(ids(hits)) == {"a", "b"}
    assert next(h for h in hits if h.id == "a").attrs["source"] == "yna"
    assert open_lexical(first.settings, "v1").documents == 2  # the CLI's path: snapshot, then the rest


def test_rows_written_without_text_are_counted_not_indexed(tmp_path):
    lake = Lake(tmp_path, include_text=False)
    lake.write(("a", "기준금리 동결"))
    ix = lake.index()
    ix.refresh()
    assert ix.documents == 0 and ix.without_text == 1


def test_filters_mean_what_they_mean_to_redis():
    doc = {"lang": "ko", "published_at": 1764000000, "source": "yna", "tags": ["economy", "bank"]}
    for expression, expected in [('.lang == "ko"', True), ('.lang == "ko" and .published_at > 1764000001', False),
                                 ("(.lang == 'en') || !(.published_at < 5)", True), ('"bank" in .tags', True),
                                 ('.lang in ["en", "ja"]', False), (".missing == 1", False),
                                 ("not (.missing == 1)", False), (".published_at / 1000 >= 1764000", True)]:
        assert compile_filter(expression)(doc) is expected, expression
    for bad in ['__import__("os")', ".lang.__class__", "open(1)", ".lang ==", "[].__class__", "(1).real"]:
        with pytest.raises(FilterError):
            compile_filter(bad)


def test_reciprocal_rank_fusion_explains_each_hit():
    s = EmbedworkerSettings().search
    dense = [SearchHit(id=i, score=0.9 - n / 10) for n, i in enumerate(["a", "b", "c"])]
    words = [LexicalHit("c", 7.0, {"title": "C"}), LexicalHit("d", 5.0, {"title": "D", "lang": "ko"})]
    hits = fuse(dense, words, 3, s)
    assert ids(hits) == ["c", "a", "b"], "in both rankings beats first in one"
    c = hits[0]
    assert c.explain == {"dense_rank": 3, "dense_score": 0.7, "lexical_rank": 1, "lexical_score": 7.0,
                         "fused": round(1 / 63 + 1 / 61, 6)}
    assert c.score == c.explain["fused"]
    only_words = fuse([], words, 3, s)
    assert ids(only_words) == ["c", "d"] and only_words[1].title == "D" and only_words[1].explain["dense_rank"] is None


def test_the_mode_defaults_to_hybrid_only_where_a_lexical_index_can_exist():
    assert choose_mode(None, EmbedworkerSettings()) == "hybrid"
    plain = EmbedworkerSettings(parquet={"format": "files"})
    assert choose_mode(None, plain) == "dense"
    with pytest.raises(NoLexicalIndexError, match="parquet.format: delta"):
        choose_mode("lexical", plain)
    assert choose_mode(None, EmbedworkerSettings(search={"mode": "dense"})) == "dense"


def test_with_a_reranker_the_index_keeps_each_documents_passage_and_its_snapshot_too(tmp_path):
    lake = Lake(tmp_path)
    lake.write(("a", "한국은행이 기준금리를 동결했다. " * 100, {"title": "금리 동결"}))
    settings = EmbedworkerSettings(parquet={"path": str(tmp_path)},
                                   search={"reranker": "any-cross-encoder", "rerank_max_chars": 50})
    ix = LexicalIndex(settings, "v1", ANALYZER)
    ix.refresh()
    assert ix.passages["a"].startswith("금리 동결\n한국은행이") and len(ix.passages["a"]) == 50
    ix.save_snapshot()
    again = LexicalIndex(settings, "v1", ANALYZER)
    assert again.load_snapshot() is not None and again.passages == ix.passages
    plain = lake.index()
    assert plain.load_snapshot() is not None and plain.passages == {}, "kept only where a reranker reads them"


def test_a_snapshot_cut_short_by_a_kill_is_never_read(tmp_path):
    """A process killed while saving leaves a folder without _SUCCESS: the next one ignores it
    and starts from the last whole snapshot (or from the lake)."""
    lake = Lake(tmp_path)
    lake.write(("a", "기준금리 동결"))
    ix = lake.index()
    ix.refresh()
    ix.save_snapshot()
    lake.write(("b", "환율 1,400원 돌파"))
    ix.refresh()
    where = ix.save_snapshot()
    (tmp_path / where / "_SUCCESS").unlink()  # as if killed before the last write
    again = lake.index()
    assert again.load_snapshot() == 1 and again.documents == 1
    assert again.refresh() and again.documents == 2
