"""`embedworker eval`: retrieval quality through the real pipeline and index, against exact search.

The corpus (BEIR layout: corpus.jsonl, queries.jsonl, qrels.tsv) is indexed by the streaming
pipeline itself (Kafka -> worker -> Redis and Parquet) under names of its own, so production
topics and keys are never touched. Every query then goes through the same path as `search`
(VSIM over every shard, merged, the best chunk standing for its document) and, as the
reference, through exact cosine over the vectors the pipeline wrote to Parquet. Further index
layouts (quantization, M, EF at build and at query, shard count) are built from those same
vectors, so the comparison isolates what the index costs.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
from kafka.errors import KafkaError

from pipelines.batch.replay import replay_topic
from pipelines.config import EmbedworkerSettings
from pipelines.evaluation.eval_sets import EvalSet, retrieval_metrics
from pipelines.lexical.index import LexicalIndex
from pipelines.maintenance.lake_admin import LakeError, read_rows
from pipelines.ops.produce import produce_file
from pipelines.serving.hybrid import lexical_possible, run_search
from pipelines.serving.reranker import reranker_from
from pipelines.serving.search import Searcher
from workers.encoding.encoder import Encoder
from workers.kafka.clients import new_admin
from workers.settings import DEFAULT_QUANTIZATION, model_slug
from workers.sinks.base import SinkRecord
from workers.sinks.parquet_files import open_filesystem
from workers.sinks.redis_client import connect
from workers.sinks.redis_vset import RedisVectorSetSink


@dataclass(frozen=True)
class IndexVariant:
    quantization: str
    m: int
    ef_build: int
    ef_search: int | None
    shards: int

    @property
    def name(self) -> str:
        return (f"{self.quantization} M{self.m} ef-build {self.ef_build} ef {self.ef_search or 'default'} "
                f"x{self.shards}")


def variants_from(settings: EmbedworkerSettings, quantizations=None, ms=None, ef_builds=None, ef_searches=None,
                  shard_counts=None) -> list[IndexVariant]:
    """Every combination of the given options; an option not given keeps the config's value.
    The first variant is the configured index, the one the pipeline builds itself."""
    r = settings.redis
    quantization = r.quantization or DEFAULT_QUANTIZATION  # the eval's indexes are new ones
    base = IndexVariant(quantization, r.m, r.ef, None, r.shards)
    combos = itertools.product(quantizations or [quantization], ms or [r.m], ef_builds or [r.ef],
                               ef_searches or [None], shard_counts or [r.shards])
    out = [base] + [IndexVariant(q.lower(), m, eb, es, s) for q, m, eb, es, s in combos]
    return list(dict.fromkeys(out))


class RetrievalEval:
    def __init__(self, settings: EmbedworkerSettings, data: EvalSet, variants: list[IndexVariant], k: int = 10,
                 keep: bool = False, timeout_s: float = 900.0):
        run = uuid.uuid4().hex[:8]
        self.run_id, self.data, self.k, self.keep, self.timeout_s = run, data, k, keep, timeout_s
        self.variants = variants or variants_from(settings)
        k_ = settings.kafka
        # Names of its own: the pipeline runs exactly as configured, on an eval topic and keys.
        self.settings = settings.model_copy(update={
            "kafka": k_.model_copy(update={"topic": f"{k_.topic}.eval-{run}", "group_id": f"{k_.group_id}-eval-{run}",
                                           "dlq_topic": None, "start": "earliest"}),
            "redis": settings.redis.model_copy(update={"key_prefix": f"{settings.redis.key_prefix}-eval-{run}",
                                                       "index": None}),
            "parquet": settings.parquet.model_copy(update={"path": f"{settings.parquet.path.rstrip('/')}/_eval/{run}"}),
        })

    def run(self, on_step=lambda message: None) -> dict:
        """Index, search, score; returns the report. Removes what it created unless keep=True.
        Raises BackfillError (an EmbedworkerError) when the pipeline does not index the corpus in time."""
        try:
            on_step(f"indexing {len(self.data.corpus)} documents through the pipeline")
            t0 = time.monotonic()
            pipeline = self._index_through_pipeline()
            pipeline["seconds"] = round(time.monotonic() - t0, 1)
            ids, chunks, matrix = self._read_vectors()
            m = self.settings.model
            encoder = Encoder.from_settings(m, self.settings.batching)
            qids = sorted(self.data.queries)
            qvecs = encoder.encode_queries([self.data.queries[q] for q in qids])
            exact = self._exact(ids, matrix, qids, qvecs)
            rows = [{"name": "exact cosine over Parquet", **retrieval_metrics(exact, self.data.qrels, self.k)}]
            for i, variant in enumerate(self.variants):
                on_step(f"searching {variant.name}")
                rows.append(self._search_variant(i, variant, encoder, ids, chunks, matrix, qids, qvecs, exact))
            for row in rows[1:]:
                for metric in (f"ndcg@{self.k}", f"recall@{self.k}", f"mrr@{self.k}"):
                    row[f"{metric} diff"] = round(row[metric] - rows[0][metric], 4)
            modes = None
            if lexical_possible(self.settings):
                on_step("searching by words (BM25 over the lake) and hybrid")
                modes = self._search_modes(encoder, qids, qvecs)
            return {"run_id": self.run_id, "date": time.strftime("%Y-%m-%d"), "model": m.name,
                    "documents": len(self.data.corpus),
                    "queries": len(qids), "judgements": sum(len(v) for v in self.data.qrels.values()),
                    "vectors": int(matrix.shape[0]), "pipeline": pipeline, "results": rows, "modes": modes}
        finally:
            if not self.keep:
                self.cleanup()

    # ---- indexing -------------------------------------------------------------------------------

    def _index_through_pipeline(self) -> dict:
        s = self.settings
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "corpus.jsonl"
            path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in self.data.as_documents()),
                            encoding="utf-8")
            sent = produce_file(s, path, partitions=max(1, s.workers.replicas))["sent"]
        replay = replay_topic(s, s.kafka.topic, s.kafka.group_id, timeout_s=self.timeout_s)
        results = replay["replicas"]
        return {"sent": sent, "embedded": sum(r.get("embedded", 0) for r in results),
                "rejected": sum(r.get("rejected", 0) for r in results)}

    def _read_vectors(self) -> tuple[list[str], list[int], np.ndarray]:
        table = read_rows(self.settings, columns=["id", "chunk", "embedding", "op"], filter=ds.field("op") == "upsert")
        if table is None:
            raise LakeError(f"no vectors in {self.settings.parquet.path}: nothing was indexed")
        ids, chunks = table["id"].to_pylist(), table["chunk"].to_pylist()
        matrix = np.asarray(table["embedding"].to_pylist(), dtype=np.float32)
        return ids, chunks, matrix

    # ---- searching ------------------------------------------------------------------------------

    def _exact(self, ids: list[str], matrix: np.ndarray, qids: list[str], qvecs: np.ndarray) -> dict[str, list[str]]:
        """Brute force: cosine of every query with every vector; a document scores its best chunk."""
        scores = qvecs @ matrix.T
        ranked = {}
        for qi, qid in enumerate(qids):
            best: dict[str, float] = {}
            for doc_id, score in zip(ids, scores[qi].tolist()):
                if score > best.get(doc_id, -2.0):
                    best[doc_id] = score
            ranked[qid] = [d for d, _ in sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:self.k]]
        return ranked

    def _variant_settings(self, i: int, v: IndexVariant) -> EmbedworkerSettings:
        r = self.settings.redis
        prefix = r.key_prefix if i == 0 else f"{r.key_prefix}:v{i}"
        return self.settings.model_copy(update={"redis": r.model_copy(update={
            "key_prefix": prefix, "quantization": v.quantization, "m": v.m, "ef": v.ef_build, "shards": v.shards})})

    def _build(self, settings: EmbedworkerSettings, ids, chunks, matrix) -> float:
        """VADD the pipeline's vectors into a variant's layout; returns the seconds it took."""
        s = settings
        sink = RedisVectorSetSink(s.redis, model_slug(s.model.name), s.model.name, matrix.shape[1])
        sink.setup()
        chunked = s.model.chunking.enabled
        counts = Counter(ids)
        records = [SinkRecord(id=d, op="upsert", topic="eval", partition=0, offset=n, vector=matrix[n], chunk=c,
                              chunks=counts[d], chunked=chunked) for n, (d, c) in enumerate(zip(ids, chunks))]
        t0 = time.perf_counter()
        for start in range(0, len(records), 500):
            sink.write(records[start:start + 500])
        seconds = time.perf_counter() - t0
        sink.close()
        return seconds

    def _search_variant(self, i, variant, encoder, ids, chunks, matrix, qids, qvecs, exact) -> dict:
        settings = self._variant_settings(i, variant)
        build_s = None
        if i > 0:
            build_s = self._build(settings, ids, chunks, matrix)
        searcher = Searcher(settings, encoder=encoder)
        searcher.setup()
        t0 = time.perf_counter()
        ranked = {qid: [h.id for h in searcher.search_vector(qvecs[n], k=self.k, ef=variant.ef_search)]
                  for n, qid in enumerate(qids)}
        seconds = time.perf_counter() - t0
        overlap = np.mean([len(set(ranked[q]) & set(exact[q])) / max(1, len(exact[q])) for q in qids])
        row = {"name": variant.name, **retrieval_metrics(ranked, self.data.qrels, self.k),
               f"recall@{self.k} vs exact": round(float(overlap), 4), "queries/s": round(len(qids) / max(seconds, 1e-9), 1)}
        if build_s is not None:
            row["inserts/s"] = round(len(ids) / max(build_s, 1e-9), 1)
        return row

    def _search_modes(self, encoder, qids: list[str], qvecs: np.ndarray) -> dict:
        """Dense, lexical and hybrid rankings of every query over the configured index (the lexical
        index built from the eval's own lake), scored overall and per query language."""
        s = self.settings
        lexical = LexicalIndex(s, s.redis.index_name(s.model.name))
        t0 = time.perf_counter()
        lexical.refresh()
        build_s = time.perf_counter() - t0
        searcher = Searcher(s, encoder=encoder)
        searcher.setup()
        reranker = reranker_from(s)
        runs = [("dense", "dense", None), ("lexical", "lexical", None), ("hybrid", "hybrid", None)]
        if reranker is not None:
            runs.append(("hybrid reranked", "hybrid", reranker))
        ranked: dict[str, dict[str, list[str]]] = {}
        took: dict[str, float] = {}
        for name, mode, rr in runs:
            t0 = time.perf_counter()
            ranked[name] = {qid: [h.id for h in run_search(mode, self.data.queries[qid], qvecs[n], self.k, None, None,
                                                           searcher, searcher.index, lexical, s.search, rr)]
                            for n, qid in enumerate(qids)}
            took[name] = round((time.perf_counter() - t0) * 1000 / max(1, len(qids)), 1)
        groups = {"all": set(qids)}
        for qid, lang in self.data.query_langs.items():
            groups.setdefault(lang, set()).add(qid)
        rows = []
        for group, members in groups.items():
            qrels = {q: rel for q, rel in self.data.qrels.items() if q in members}
            dense = None
            for mode in ranked:
                row = {"queries": group, "mode": mode, "count": len(qrels), **retrieval_metrics(ranked[mode], qrels, self.k),
                       "ms/query": took[mode]}
                dense = dense or row
                row[f"ndcg@{self.k} vs dense"] = round(row[f"ndcg@{self.k}"] - dense[f"ndcg@{self.k}"], 4)
                rows.append(row)
        return {"lexical_build_s": round(build_s, 2), "lexical_documents": lexical.documents,
                "reranker": s.search.reranker,
                "rrf_k": s.search.rrf_k, "candidates": s.search.candidates, "rows": rows}

    # ---- cleanup --------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove the eval topic, its keys and its Parquet folder (best effort)."""
        s = self.settings
        try:
            admin = new_admin(s.kafka, "eval")
            try:
                topics = [t for t in (s.kafka.topic, s.kafka.dead_letter_topic) if t in admin.list_topics()]
                if topics:
                    admin.delete_topics(topics)
                admin.delete_groups([s.kafka.group_id])
            finally:
                admin.close()
        except KafkaError:
            pass
        for url in dict.fromkeys(s.redis.shard_urls or [s.redis.url]):
            client = connect(s.redis, url)
            keys = list(client.scan_iter(match=f"{s.redis.key_prefix}*", count=1000))
            if keys:
                client.unlink(*keys)
        fs, root = open_filesystem(s.parquet.path)
        try:
            fs.delete_dir(root)
        except (OSError, FileNotFoundError):
            pass

