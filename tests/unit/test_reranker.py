"""The reranker's mechanics with a tiny random cross-encoder made here (the real rerankers,
e.g. dragonkue/bge-reranker-v2-m3-ko, cannot be downloaded on this machine): it reads the query
with each hit's passage, orders the first `rerank_top` by its own score (checked against the
model called directly), leaves the rest, and fails to load in a sentence naming the setting."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipelines.config import EmbedworkerSettings
from pipelines.serving.reranker import CrossEncoderReranker, RerankerError, reranker_from
from pipelines.serving.search import SearchHit
from tests.support.models import make_random_cross_encoder


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory):
    return make_random_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder")


def test_the_first_hits_are_ordered_by_the_models_score_of_their_passages(cross_encoder_dir):
    settings = EmbedworkerSettings(search={"reranker": str(cross_encoder_dir), "rerank_top": 4})
    reranker = reranker_from(settings)
    passages = {f"d{i}": f"passage number {i} about interest rates {'and chips ' * i}" for i in range(6)}
    hits = [SearchHit(id=f"d{i}", score=1 - i / 10, title=f"title {i}", explain={"dense_rank": i + 1}) for i in range(6)]
    out = reranker.rerank("interest rates", hits, passages, settings.search, k=6)

    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(cross_encoder_dir)).eval()
    with torch.inference_mode():
        batch = tokenizer(["interest rates"] * 4, [passages[f"d{i}"] for i in range(4)], padding=True,
                          return_tensors="pt")
        expected = model(**batch).logits[:, 0].numpy()
    assert [h.id for h in out[:4]] == [f"d{i}" for i in np.argsort(-expected, kind="stable")]
    assert [h.id for h in out[4:]] == ["d4", "d5"], "past rerank_top the order stays"
    top = out[0]
    assert top.explain["rerank_score"] == pytest.approx(float(expected.max()), abs=1e-3)
    assert top.explain["dense_rank"] == top.explain["rank_before_rerank"]
    assert len(reranker.rerank("x", hits[:3], {}, settings.search, k=2)) == 2  # no passage: the title is read


def test_a_reranker_that_cannot_load_is_named_in_a_sentence(tmp_path):
    assert reranker_from(EmbedworkerSettings()) is None
    with pytest.raises(RerankerError, match="search.reranker"):
        CrossEncoderReranker(str(tmp_path / "missing")).setup()
