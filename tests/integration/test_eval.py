"""`embedworker eval` on the shipped bilingual set with the real offline model (all-MiniLM-L6-v2),
checked against a brute-force computation done here with sentence-transformers and numpy."""

import math

import numpy as np
import pytest

from pipelines.evaluation.eval_sets import EvalSet
from pipelines.evaluation.retrieval_eval import RetrievalEval, variants_from
from tests.helpers import make_settings

pytestmark = pytest.mark.integration


def brute_force(model_dir, data: EvalSet, k: int = 10) -> dict:
    """Independent reference: encode with sentence-transformers, rank by dot product, score."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    ids = sorted(data.corpus)
    texts = [f"{data.corpus[i]['title']}\n{data.corpus[i]['text']}" if data.corpus[i].get("title")
             else data.corpus[i]["text"] for i in ids]
    docs = model.encode(texts, normalize_embeddings=True, batch_size=32)
    qids = sorted(data.queries)
    queries = model.encode([data.queries[q] for q in qids], normalize_embeddings=True)
    scores = queries @ docs.T
    ndcg, recall, mrr = [], [], []
    for n, qid in enumerate(qids):
        top = [ids[j] for j in np.argsort(-scores[n], kind="stable")[:k]]
        grades = data.qrels[qid]
        dcg = sum(grades.get(d, 0) / math.log2(r + 2) for r, d in enumerate(top))
        ideal = sorted(grades.values(), reverse=True)[:k]
        ndcg.append(dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal)))
        relevant = {d for d, g in grades.items() if g > 0}
        recall.append(len(relevant.intersection(top)) / len(relevant))
        mrr.append(next((1 / (r + 1) for r, d in enumerate(top) if d in relevant), 0.0))
    return {"ndcg@10": np.mean(ndcg), "recall@10": np.mean(recall), "mrr@10": np.mean(mrr)}


def test_eval_through_the_pipeline_matches_brute_force_and_q8_keeps_recall(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, real_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, real_model_dir, tmp_path, unique,
                             model={"document_prefix": "", "query_prefix": ""},
                             redis={"quantization": "q8"}, workers={"replicas": 1, "num_gpus": 0, "num_cpus": 1})
    data = EvalSet.load()
    assert len(data.corpus) >= 100 and len(data.queries) >= 30
    assert {d["lang"] for d in data.corpus.values()} == {"ko", "en"}
    assert any(g >= 2 for rel in data.qrels.values() for g in rel.values()), "graded judgements"

    variants = variants_from(settings, quantizations=["q8", "bin"], shard_counts=[1, 4])
    report = RetrievalEval(settings, data, variants).run()
    assert report["pipeline"]["embedded"] == len(data.corpus) == report["vectors"]
    exact, configured = report["results"][0], report["results"][1]
    expected = brute_force(real_model_dir, data)
    for metric, value in expected.items():
        assert exact[metric] == pytest.approx(value, abs=0.01), metric

    # The configured index: Q8, default EF, one vector set.
    assert configured["name"] == "q8 M16 ef-build 100 ef default x1"
    assert configured["recall@10 vs exact"] >= 0.98
    assert abs(configured["ndcg@10 diff"]) <= 0.02
    rows = {r["name"]: r for r in report["results"][1:]}
    assert rows["q8 M16 ef-build 100 ef default x4"]["recall@10 vs exact"] >= 0.98
    assert rows["bin M16 ef-build 100 ef default x1"]["recall@10 vs exact"] < configured["recall@10 vs exact"]

    # Words, vectors and both, over the lexical index built from the eval's own lake. all-MiniLM
    # reads English only: on the Korean queries the words carry the ranking.
    modes = {(r["queries"], r["mode"]): r for r in report["modes"]["rows"]}
    assert report["modes"]["lexical_documents"] == len(data.corpus)
    assert set(modes) == {(q, m) for q in ("all", "ko", "en") for m in ("dense", "lexical", "hybrid")}
    assert modes[("all", "dense")]["ndcg@10"] == configured["ndcg@10"], "dense mode is the configured index"
    assert modes[("ko", "lexical")]["ndcg@10"] > modes[("ko", "dense")]["ndcg@10"] + 0.1
    assert modes[("ko", "hybrid")]["ndcg@10 vs dense"] > 0.03
    assert modes[("all", "lexical")]["recall@10"] > 0.2, "the queries are worded unlike their articles"

    # The eval removed what it made.
    assert not list(redis_client.scan_iter(match=f"{settings.redis.key_prefix}-eval-{report['run_id']}*"))
    assert not (tmp_path / "parquet" / "_eval" / report["run_id"]).exists()
