"""The optional reranker: a cross-encoder (`search.reranker`, e.g. the KoEn-E5-Tiny card's
dragonkue/bge-reranker-v2-m3-ko or BAAI/bge-reranker-v2-m3) reads the query with each of the
top `search.rerank_top` hits' passages and orders them by its score.

The passage is the document's title and the start of its text (`search.rerank_max_chars`),
kept by the lexical index when a reranker is configured (the vector set holds no text); a hit
without one is read by its title. It runs on the GPU when there is one (`model.device`), in
half precision there. Loading fails in a sentence (RerankerError), never at the first query.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from pipelines.config import EmbedworkerSettings, SearchSettings
from pipelines.serving.search import SearchError, SearchHit

log = logging.getLogger("embedworker.reranker")


class RerankerError(SearchError):
    """The reranker could not be loaded or run (the message names the model and why)."""


def reranker_from(settings: EmbedworkerSettings) -> CrossEncoderReranker | None:
    """The configured reranker, loaded (None when `search.reranker` is not set). Raises RerankerError."""
    if settings.search.reranker is None:
        return None
    reranker = CrossEncoderReranker(settings.search.reranker, settings.model.device)
    reranker.setup()
    return reranker


class CrossEncoderReranker:
    """Cheap to construct and to pickle; `setup()` loads the model (once per process)."""

    def __init__(self, name: str, device: str = "auto", max_length: int = 512, batch_size: int = 32):
        self.name, self.device_setting, self.max_length, self.batch_size = name, device, max_length, batch_size
        self.model = self.tokenizer = self.device = None

    def setup(self) -> None:
        """Load the tokenizer and the model. Raises RerankerError naming the model."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        device = self.device_setting
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            model = AutoModelForSequenceClassification.from_pretrained(self.name)
        except (OSError, ValueError) as exc:
            raise RerankerError(f"cannot load the reranker {self.name!r} (search.reranker): {exc}") from None
        self.device = torch.device(device)
        if self.device.type == "cuda":
            model = model.half()
        self.model = model.to(self.device).eval()

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        """The model's relevance score of each passage for the query (higher is better)."""
        import torch

        out = []
        for start in range(0, len(passages), self.batch_size):
            part = passages[start:start + self.batch_size]
            batch = self.tokenizer([query] * len(part), part, padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits
            out.append(logits[:, 0].float().cpu().numpy() if logits.shape[-1] == 1
                       else logits.float().softmax(-1)[:, -1].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def rerank(self, query: str, hits: list[SearchHit], passages: dict[str, str], s: SearchSettings,
               k: int) -> list[SearchHit]:
        """The first `s.rerank_top` hits ordered by the model (each explains its reranker score and
        the rank it had), then the rest as they were; the first k of that."""
        top, rest = hits[:s.rerank_top], hits[s.rerank_top:]
        if not top:
            return hits[:k]
        t0 = time.perf_counter()
        texts = [passages.get(h.id) or h.title or h.id for h in top]
        scores = self.scores(query, texts)
        order = np.argsort(-scores, kind="stable")
        reranked = []
        for i in order.tolist():
            hit = top[i]
            hit.explain = {**(hit.explain or {}), "rank_before_rerank": i + 1, "rerank_score": round(float(scores[i]), 4)}
            hit.score = round(float(scores[i]), 6)
            reranked.append(hit)
        log.debug("reranked %d hits in %.1f ms", len(top), (time.perf_counter() - t0) * 1000)
        return (reranked + rest)[:k]
