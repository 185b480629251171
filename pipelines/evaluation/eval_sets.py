"""Retrieval eval sets in the BEIR / MTEB layout, and the metrics (NDCG@k, Recall@k, MRR@k).

corpus.jsonl: {"_id", "title", "text", ...}; queries.jsonl: {"_id", "text"}; qrels.tsv:
query-id, corpus-id, score (graded, > 0 relevant; a header line is allowed). The shipped set
(pipelines/demo_data/eval_*) holds 204 Korean and English news passages and 34 queries.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from workers.errors import EmbedworkerError

SHIPPED = Path(__file__).parents[1] / "demo_data"


class EvalDataError(EmbedworkerError):
    """An eval file is missing or malformed (the message names the file and line)."""


@dataclass
class EvalSet:
    corpus: dict[str, dict]            # id -> {"title", "text", other fields}
    queries: dict[str, str]            # id -> text
    qrels: dict[str, dict[str, int]]   # query id -> {doc id: grade}
    query_langs: dict[str, str] = field(default_factory=dict)  # query id -> its `lang`, where given

    @classmethod
    def load(cls, corpus: str | Path | None = None, queries: str | Path | None = None,
             qrels: str | Path | None = None) -> EvalSet:
        """Read the three files (the shipped set for any not given). Raises EvalDataError."""
        docs = {d["_id"]: d for d in _jsonl(Path(corpus or SHIPPED / "eval_corpus.jsonl"), ("_id", "text"))}
        query_rows = _jsonl(Path(queries or SHIPPED / "eval_queries.jsonl"), ("_id", "text"))
        qs = {q["_id"]: q["text"] for q in query_rows}
        langs = {q["_id"]: q["lang"] for q in query_rows if isinstance(q.get("lang"), str)}
        judged = _qrels(Path(qrels or SHIPPED / "eval_qrels.tsv"))
        unknown = sorted({d for rel in judged.values() for d in rel if d not in docs})
        if unknown:
            raise EvalDataError(f"qrels name {len(unknown)} document(s) not in the corpus, e.g. {unknown[:3]}")
        judged = {q: rel for q, rel in judged.items() if q in qs and any(g > 0 for g in rel.values())}
        if not judged:
            raise EvalDataError("no query has a relevant document in the qrels")
        return cls(docs, {q: t for q, t in qs.items() if q in judged}, judged,
                   {q: lang for q, lang in langs.items() if q in judged})

    def as_documents(self) -> list[dict]:
        """The corpus as pipeline documents (id, title, text, lang when given)."""
        out = []
        for doc_id, d in self.corpus.items():
            doc = {"id": doc_id, "title": d.get("title") or None, "text": d["text"]}
            if d.get("lang"):
                doc["lang"] = d["lang"]
            out.append({k: v for k, v in doc.items() if v is not None})
        return out


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise EvalDataError(f"{path} does not exist")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"{path}:{n}: not JSON ({exc})") from None
            missing = [k for k in required if not isinstance(item, dict) or not item.get(k)]
            if missing:
                raise EvalDataError(f"{path}:{n}: missing {', '.join(missing)}")
            item["_id"] = str(item["_id"])
            out.append(item)
    return out


def _qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise EvalDataError(f"{path} does not exist")
    out: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (n == 1 and row[0] == "query-id"):
                continue
            try:
                qid, did, grade = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise EvalDataError(f"{path}:{n}: expected query-id<TAB>corpus-id<TAB>integer score") from None
            out.setdefault(qid, {})[did] = grade
    return out


def retrieval_metrics(ranked: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10) -> dict:
    """Mean NDCG@k (linear gains, as trec_eval), Recall@k and MRR@k over the judged queries."""
    ndcg = recall = mrr = 0.0
    for qid, rel in qrels.items():
        top = ranked.get(qid, [])[:k]
        dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(top))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        ndcg += dcg / idcg if idcg else 0.0
        relevant = {d for d, g in rel.items() if g > 0}
        recall += len(relevant & set(top)) / len(relevant) if relevant else 0.0  # judged, none relevant: 0
        mrr += next((1.0 / (i + 1) for i, d in enumerate(top) if d in relevant), 0.0)
    n = max(1, len(qrels))
    return {f"ndcg@{k}": round(ndcg / n, 4), f"recall@{k}": round(recall / n, 4), f"mrr@{k}": round(mrr / n, 4)}
