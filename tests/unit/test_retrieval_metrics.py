"""retrieval_metrics against hand-computed values (linear gains, log2 discount, as trec_eval)."""

import math

import pytest

from pipelines.evaluation.eval_sets import retrieval_metrics


def test_hand_computed_ndcg_recall_mrr():
    qrels = {"q1": {"a": 2, "b": 1, "c": 0}, "q2": {"d": 1}, "q3": {"e": 0}}
    ranked = {"q1": ["c", "a", "x", "b"], "q2": ["d"], "q3": ["e"]}
    m = retrieval_metrics(ranked, qrels, k=3)
    q1_ndcg = (2 / math.log2(3)) / (2 + 1 / math.log2(3))  # a at rank 2; ideal: a, b; b is at rank 4 > k
    assert q1_ndcg == pytest.approx(0.47963, abs=1e-5)
    assert m["ndcg@3"] == pytest.approx(round((q1_ndcg + 1.0 + 0.0) / 3, 4))
    assert m["recall@3"] == pytest.approx(round((0.5 + 1.0 + 0.0) / 3, 4))  # q3 has no relevant document: 0
    assert m["mrr@3"] == pytest.approx(round((0.5 + 1.0 + 0.0) / 3, 4))


def test_k_cuts_the_ranking_and_a_query_without_results_scores_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 3}}
    m = retrieval_metrics({"q1": ["x", "y", "a"]}, qrels, k=2)
    assert m == {"ndcg@2": 0.0, "recall@2": 0.0, "mrr@2": 0.0}
    m = retrieval_metrics({"q1": ["x", "y", "a"]}, qrels, k=3)
    assert m["ndcg@3"] == pytest.approx(round((1 / math.log2(4)) / 2, 4)) and m["mrr@3"] == pytest.approx(round(1 / 3 / 2, 4))
