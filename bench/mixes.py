"""The benchmark documents and the stand-in tokenizer, carried by the project itself.

`docs(mix, n)` is the generator of the GPU anchors (shared/bench/anchor_bench.py: the same
seed, the same draws, so the same texts): synthetic Korean/English news, `news` (titles,
briefs and long articles, mean ~358 tokens, 41 % truncated at 512) or `short` (headlines, mean
~64 tokens). Returned without the `passage: ` prefix (the encoders add it).

`stand_in_tokenizer()` is the anchors' `tokenizer.json` when they are beside the checkout
(`../shared/bench`, or `bench/_shared` where a device run carries them), so numbers compare with
theirs; otherwise a tokenizer of the same recipe (Unigram, XLM-R style: NFKC, Metaspace,
`<s> … </s>`) that this module trains once and caches (`EMBEDWORKER_CACHE_DIR`, default
~/.cache/embedworker). `train_tokenizer` is that recipe; a smaller vocabulary trains in seconds
for tests. Imports only `tokenizers`.
"""

from __future__ import annotations

import os
import random
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE_VERSION = "1"  # bump when train_tokenizer changes what it makes
FULL_VOCAB, FULL_CORPUS = 42_000, 30_000  # the anchors' stand-in


def docs(mix: str, n: int, seed: int = 1) -> list[str]:
    """`n` documents of `mix` ("news" or "short"), the anchors' texts without their prefix."""
    if mix not in ("news", "short"):
        raise ValueError(f"unknown mix {mix!r}: news or short")
    rng = random.Random(seed)
    syllables = [chr(0xAC00 + i) for i in range(11172)]
    common = rng.sample(syllables, 1200)
    english = str.split("the of and to in market government company price report police court ai seoul korea")
    out = []
    for _ in range(n):
        r = rng.random()
        if mix == "short":
            words = rng.randint(6, 30)
        else:
            words = rng.randint(8, 20) if r < 0.2 else (rng.randint(60, 200) if r < 0.7 else rng.randint(300, 900))
        ws = []
        for _ in range(words):
            if rng.random() < 0.15:
                ws.append(rng.choice(english))
            else:
                ws.append("".join(rng.choice(common) for _ in range(rng.choice([1, 2, 2, 3, 3, 4]))))
        out.append(" ".join(ws))
    return out


def training_corpus(n_docs: int, seed: int = 0):
    """The anchors' tokenizer training text: Korean syllable words weighted toward common ones,
    English words and numbers."""
    rng = random.Random(seed)
    syllables = [chr(0xAC00 + i) for i in range(11172)]
    common = rng.sample(syllables, 1200)
    english = str.split("the of and to in is for on that with by as from at said will has are was "
                        "market government company price report year new percent police court "
                        "president minister economy bank rate growth data ai seoul korea")
    for _ in range(n_docs):
        words = []
        for _ in range(rng.randint(20, 400)):
            if rng.random() < 0.15:
                words.append(rng.choice(english))
            elif rng.random() < 0.05:
                words.append(str(rng.randint(1, 2030)))
            else:
                k = rng.choice([1, 2, 2, 3, 3, 3, 4, 5])
                words.append("".join(rng.choice(common) if rng.random() < 0.9 else rng.choice(syllables)
                                     for _ in range(k)))
        yield " ".join(words)


def train_tokenizer(out: Path, vocab: int = FULL_VOCAB, corpus_docs: int = FULL_CORPUS) -> Path:
    """Train the stand-in recipe and save it to `out` (written under a temporary name, then
    renamed). The full size takes minutes on one core; vocab 8,000 over 3,000 docs, seconds."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(training_corpus(corpus_docs), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    tok.save(str(tmp))
    os.replace(tmp, out)
    return out


def find_shared(arg: str | None = None) -> Path | None:
    """The anchors' folder (`--shared`, ../shared/bench or bench/_shared), or None."""
    for candidate in ([arg] if arg else []) + [str(ROOT.parent / "shared" / "bench"), str(ROOT / "bench" / "_shared")]:
        if candidate and (Path(candidate) / "tokenizer.json").is_file():
            return Path(candidate)
    if arg:
        raise SystemExit(f"--shared {arg}: no tokenizer.json there")
    return None


def stand_in_tokenizer(shared: str | None = None, vocab: int = FULL_VOCAB, corpus_docs: int = FULL_CORPUS) -> Path:
    """The anchors' tokenizer.json when present (full size asked), else this project's copy of
    the recipe, trained on first use and cached."""
    found = find_shared(shared) if (vocab, corpus_docs) == (FULL_VOCAB, FULL_CORPUS) else None
    if found is not None:
        return found / "tokenizer.json"
    cache = Path(os.environ.get("EMBEDWORKER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "embedworker"))
    path = cache / "bench" / f"stand-in-tokenizer-v{RECIPE_VERSION}-{vocab}-{corpus_docs}.json"
    return path if path.is_file() else train_tokenizer(path, vocab, corpus_docs)
