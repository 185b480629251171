"""The encoder: texts in, L2-normalized float32 vectors out, as fast as the hardware allows.

    enc = Encoder.load("exp-models/dragonkue-KoEn-E5-Tiny")        # or a directory, or pkg:...
    docs = enc.encode_documents(["서울 시장 ...", "..."])           # 'passage: ' prefix, (n, dim)
    qs = enc.encode_queries(["금리 인상"])                           # 'query: ' prefix

Three stages, as in Infinity's split: tokenize (Rust tokenizers in a thread pool, the GIL
released), forward (token-budget batches of similar length, fp16/bf16 on CUDA with SDPA
attention, fp32/bf16/int8 on CPU), post (pooling from the model's own config, L2 norm).
Tokenizing the next window of texts overlaps the forward pass of the current one, and on
CUDA the next batch is queued before the previous result is copied back.
Imports neither ray, kafka nor redis: it runs on a bare GPU box.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from workers.encoding.batching import Batch, TokenBudgetBatcher
from workers.encoding.model_files import ModelFiles, read_model_files
from workers.encoding.tokenizing import TextTokenizer, TokenizedTexts, TokenizerProcesses
from workers.errors import EncoderConfigError

DEFAULT_MODEL = "exp-models/dragonkue-KoEn-E5-Tiny"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "int8": torch.float32}
TEXTS_PER_WINDOW = 4096  # texts tokenized and length-sorted together by encode_*()


class Encoder:
    """A loaded model plus its tokenizer. Build it with `Encoder.load(...)`; not picklable
    (it holds the weights): in Ray, construct it inside the actor."""

    def __init__(self, files: ModelFiles, model: torch.nn.Module, tokenizer: TextTokenizer, *,
                 device: torch.device, dtype: str, pad_token_id: int, document_prefix: str,
                 query_prefix: str, max_batch_tokens: int, max_batch_size: int, tokenizer_threads: int,
                 tokenizer_processes: int = 0):
        self.files = files
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype
        self.pad_token_id = pad_token_id
        self.document_prefix = document_prefix
        self.query_prefix = query_prefix
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        config: Any = model.config
        self.dim = int(config.hidden_size)
        self.model_id = files.model_id
        self.revision = files.revision
        self.max_tokens = tokenizer.max_tokens
        self.pad_to_multiple_of = 8 if device.type == "cuda" else 1
        # launch() returns before the work is done (CUDA): the caller launches the next batch
        # before collecting this one; on the CPU launch() computes, and a batch is collected at once
        self.asynchronous = device.type == "cuda"
        self._pool = ThreadPoolExecutor(max_workers=tokenizer_threads, thread_name_prefix="tokenize")
        # tokenizer_processes > 0: tokenizing runs in that many processes (more cores than one
        # Python process gives the Rust tokenizer); the threads then only wait for them.
        self._processes = TokenizerProcesses(tokenizer, tokenizer_processes) if tokenizer_processes > 0 else None
        if self._processes is not None:
            self._processes.start()

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, device: str | None = None, dtype: str | None = None, *,
             revision: str | None = None, document_prefix: str = "passage: ", query_prefix: str = "query: ",
             max_tokens: int = 512, chunking: bool = False, chunk_overlap: int = 64, max_chunks: int = 32,
             max_batch_tokens: int = 16384, max_batch_size: int = 256, tokenizer_threads: int = 2,
             torch_threads: int | None = None, tokenizer_processes: int = 0) -> Encoder:
        """Load a model by hub id, directory or `pkg:` name. `device`: None/"auto", "cpu",
        "cuda", "cuda:N"; `dtype`: None/"auto" (fp16 on CUDA, fp32 on CPU), "fp32", "fp16",
        "bf16", or "int8" (CPU: smoothed dynamic quantization, see workers.encoding.quantization).

        Raises ModelNotFoundError (names what was tried), UnsupportedModelError, EncoderConfigError."""
        from transformers import AutoModel, AutoTokenizer

        files = read_model_files(model, revision)
        dev = _pick_device(device)
        dt = _pick_dtype(dtype, dev)
        if torch_threads:
            torch.set_num_threads(torch_threads)
        hf_tokenizer = AutoTokenizer.from_pretrained(str(files.transformer_dir))
        backend = getattr(hf_tokenizer, "_tokenizer", None) if getattr(hf_tokenizer, "is_fast", False) else None
        if backend is None:
            raise EncoderConfigError(f"{files.transformer_dir}: a fast (Rust) tokenizer is required (tokenizer.json)")
        net = _load_transformer(AutoModel, files, dt, dev)
        limit = _position_limit(net.config)
        effective_max = min(v for v in (max_tokens, files.max_seq_length, limit) if v)
        tokenizer = TextTokenizer(backend, effective_max, lower_case=files.do_lower_case,
                                  chunking=chunking, chunk_overlap=chunk_overlap, max_chunks=max_chunks)
        pad_id = hf_tokenizer.pad_token_id if hf_tokenizer.pad_token_id is not None else 0
        encoder = cls(files, net, tokenizer, device=dev, dtype=dt, pad_token_id=pad_id,
                      document_prefix=document_prefix, query_prefix=query_prefix,
                      max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size,
                      tokenizer_threads=max(1, tokenizer_threads), tokenizer_processes=tokenizer_processes)
        if dt == "int8":
            from workers.encoding.quantization import CALIBRATION_TEXTS, quantize_int8

            encoder.model = quantize_int8(net, lambda: encoder.encode_documents(CALIBRATION_TEXTS))
        return encoder

    @classmethod
    def from_settings(cls, model, batching=None, device: str | None = None) -> Encoder:
        """The one place an encoder is built from settings (workers.settings.ModelSettings and
        BatchingSettings), so the worker, backfill, search and eval honour every key alike.
        `device` overrides model.device. Raises what `load` raises."""
        m = model
        extra = {} if batching is None else dict(max_batch_tokens=batching.max_batch_tokens,
                                                 max_batch_size=batching.max_batch_size)
        return cls.load(m.name, device=device or m.device, dtype=m.dtype, revision=m.revision,
                        document_prefix=m.document_prefix, query_prefix=m.query_prefix, max_tokens=m.max_tokens,
                        chunking=m.chunking.enabled, chunk_overlap=m.chunking.overlap, max_chunks=m.chunking.max_chunks,
                        tokenizer_threads=m.tokenizer_threads, torch_threads=m.torch_threads,
                        tokenizer_processes=m.tokenizer_processes, **extra)

    # ---- public API -------------------------------------------------------------------------

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized, `document_prefix` applied, each text
        truncated at max_tokens (use `encode_document_chunks` for one vector per chunk)."""
        vectors, _, _ = self._encode(texts, self.document_prefix, chunked=False)
        return vectors

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized, `query_prefix` applied."""
        vectors, _, _ = self._encode(texts, self.query_prefix, chunked=False)
        return vectors

    def encode_document_chunks(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunked documents: (vectors (m, dim), doc index (m,), chunk number (m,)), ordered by
        document then chunk. Without chunking enabled, one chunk per document."""
        return self._encode(texts, self.document_prefix, chunked=None)

    def tokenize_documents(self, texts: list[str]) -> TokenizedTexts:
        """Token ids with the document prefix, chunked if enabled. Thread-safe."""
        return self.tokenizer.tokenize(texts, self.document_prefix)

    def submit_tokenize(self, texts: list[str]) -> Future:
        """Tokenize documents in the encoder's thread pool; the future's result is TokenizedTexts."""
        return self._submit(texts, self.document_prefix, None)

    def _submit(self, texts: list[str], prefix: str, chunked: bool | None) -> Future:
        if self._processes is not None:
            return self._processes.submit(texts, prefix, chunked)
        return self._pool.submit(self.tokenizer.tokenize, texts, prefix, chunked)

    def encode_token_ids(self, ids: list[list[int]]) -> np.ndarray:
        """(len(ids), dim) float32 vectors of texts already tokenized (prefix and special tokens
        included, at most max_tokens each), in token-budget batches like every other path."""
        return self._encode_tokenized(TokenizedTexts(ids=ids, doc=list(range(len(ids))), chunk=[0] * len(ids)))

    def forward(self, ids: list[list[int]]) -> np.ndarray:
        """Vectors for one batch of token id lists (pads, runs the model, pools, normalizes)."""
        return self.collect(self.launch(ids, self._padded_len(ids)))

    def new_batcher(self, max_wait_ms: float = 0.0, max_padding: float = 0.1, window_batches: int = 8) -> TokenBudgetBatcher:
        return TokenBudgetBatcher(self.max_batch_tokens, self.max_batch_size, max_wait_ms,
                                  pad_to_multiple_of=self.pad_to_multiple_of, max_padding=max_padding,
                                  window_batches=window_batches)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._processes is not None:
            self._processes.close()

    # ---- the pipeline -----------------------------------------------------------------------

    def _encode(self, texts: list[str], prefix: str, chunked: bool | None):
        if isinstance(texts, str):
            raise TypeError("encode_*() takes a list of texts, not a single string")
        texts = list(texts)
        windows = [texts[i:i + TEXTS_PER_WINDOW] for i in range(0, len(texts), TEXTS_PER_WINDOW)]
        pending = deque(self._submit(w, prefix, chunked) for w in windows[:2])
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        base = 0
        for k, window in enumerate(windows):
            tokenized = pending.popleft().result()
            if k + 2 < len(windows):
                pending.append(self._submit(windows[k + 2], prefix, chunked))
            vectors = self._encode_tokenized(tokenized)
            parts.append((vectors, np.asarray(tokenized.doc, dtype=np.int64) + base,
                          np.asarray(tokenized.chunk, dtype=np.int32)))
            base += len(window)
        if not parts:
            empty = np.zeros((0, self.dim), np.float32)
            return empty, np.zeros(0, np.int64), np.zeros(0, np.int32)
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _encode_tokenized(self, tokenized: TokenizedTexts) -> np.ndarray:
        """Vectors in the order of `tokenized.ids`: length-sorted token-budget batches, each
        launched before the previous one's result is collected. All texts are here at once and
        wait for the last: length grouping spans all of them (no age window)."""
        out = np.empty((len(tokenized), self.dim), dtype=np.float32)
        batcher = self.new_batcher(window_batches=max(1, len(tokenized)))
        for i, ids in enumerate(tokenized.ids):
            batcher.add(i, len(ids), 0.0)
        in_flight: tuple[Batch, torch.Tensor] | None = None
        for batch in batcher.pop_ready(0.0, flush=True):
            launched = self.launch([tokenized.ids[i] for i in batch.items], batch.padded_len)
            if in_flight is not None:
                out[in_flight[0].items] = self.collect(in_flight[1])
            in_flight = (batch, launched)
        if in_flight is not None:
            out[in_flight[0].items] = self.collect(in_flight[1])
        return out

    def _padded_len(self, ids: Iterable[list[int]]) -> int:
        longest = max((len(x) for x in ids), default=1)
        return -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of

    def pad(self, ids: list[list[int]], padded_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(input ids, attention mask), int64 (n, padded_len), built in two vectorized steps
        (host work that runs for every batch, on the GPU box too)."""
        lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids))
        mask = np.arange(padded_len, dtype=np.int64)[None, :] < lengths[:, None]
        input_ids = np.full((len(ids), padded_len), self.pad_token_id, dtype=np.int64)
        input_ids[mask] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
        return input_ids, mask.astype(np.int64)

    @torch.inference_mode()
    def launch(self, ids: list[list[int]], padded_len: int) -> torch.Tensor:
        """Queue the forward pass of one batch, padded to `padded_len`; returns a handle (normalized
        fp32 vectors on the device) for `collect`. On CUDA this returns before the GPU is done."""
        input_ids, mask = self.pad(ids, padded_len)
        t_ids, t_mask = torch.from_numpy(input_ids), torch.from_numpy(mask)
        if self.device.type == "cuda":
            t_ids = t_ids.pin_memory().to(self.device, non_blocking=True)
            t_mask = t_mask.pin_memory().to(self.device, non_blocking=True)
        hidden = self.model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
        pooled = _pool(hidden.float(), t_mask, self.files.pooling)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    @staticmethod
    def collect(vectors: torch.Tensor) -> np.ndarray:
        """The (n, dim) float32 vectors of a launched batch (waits for the device)."""
        return vectors.cpu().numpy()


def _pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if mode in ("mean", "mean_sqrt_len"):
        summed = (hidden * m).sum(dim=1)
        counts = m.sum(dim=1).clamp(min=1e-9)
        return summed / (counts if mode == "mean" else counts.sqrt())
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise EncoderConfigError(f"unknown pooling mode {mode!r}")


def _pick_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EncoderConfigError(f"model.device is {device!r} but CUDA is not available on this machine")
    return dev


def _pick_dtype(dtype: str | None, device: torch.device) -> str:
    if dtype in (None, "", "auto"):
        return "fp16" if device.type == "cuda" else "fp32"
    if dtype not in DTYPES:
        raise EncoderConfigError(f"model.dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    if dtype == "int8" and device.type != "cpu":
        raise EncoderConfigError("model.dtype int8 (dynamic quantization) runs on the CPU only; use fp16 or bf16 on CUDA")
    if dtype == "fp16" and device.type == "cpu":
        raise EncoderConfigError("model.dtype fp16 is slow and inexact on the CPU; use fp32, bf16 or int8")
    return dtype


def _load_transformer(auto_model, files: ModelFiles, dtype: str, device: torch.device) -> torch.nn.Module:
    from transformers.utils import logging as hf_logging

    kwargs = {"dtype": DTYPES[dtype]}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # no load report about the unused pooler head
    hf_logging.disable_progress_bar()
    try:
        try:
            net = auto_model.from_pretrained(str(files.transformer_dir), attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError):
            net = auto_model.from_pretrained(str(files.transformer_dir), **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    if getattr(net, "pooler", None) is not None:
        net.pooler = None  # the pooler head is not part of sentence embeddings
    net.eval()
    return net.to(device)


def _position_limit(config) -> int | None:
    limit = getattr(config, "max_position_embeddings", None)
    if limit and getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        limit -= 2  # RoBERTa-style position ids start after the padding index
    return limit

