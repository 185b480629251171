"""Texts to token ids: prefixes, truncation, chunking and pre-cutting of very long texts.

Works on the Rust `tokenizers.Tokenizer` behind a Hugging Face fast tokenizer, which releases
the GIL, so several threads tokenize in parallel. Imports neither ray, kafka nor redis.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from tokenizers import Tokenizer

from workers.errors import EncoderConfigError

# A token of these tokenizers rarely spans more than a few characters: a 512-token window
# needs far fewer than 8 characters a token. Texts longer than that are cut before tokenizing,
# and checked afterwards (see `_tokenize_truncated`), so a 1 MiB article costs what 4 KiB do.
CHARS_PER_TOKEN_BOUND = 8
CUT_MARGIN_CHARS = 128
# Whitespace-cut truncation (tokenizers whose pre-tokenizer splits at spaces): a prefix of the
# text that ends before a space tokenizes exactly like the whole text up to there, so a long
# text is tokenized only up to a little past the limit. The prefix must reach this many tokens
# past the limit, so that nothing near the cut (a space the normalizer made) reaches the kept part.
CUT_SPARE_TOKENS = 8
SPACE_SPLITTERS = ("WhitespaceSplit", "Whitespace", "BertPreTokenizer")


@dataclass
class TokenizedTexts:
    """Token ids of one call, one entry per chunk (one chunk per text unless chunking)."""

    ids: list[list[int]] = field(default_factory=list)
    doc: list[int] = field(default_factory=list)    # index of the source text
    chunk: list[int] = field(default_factory=list)  # 0, 1, ... within the text

    def __len__(self) -> int:
        return len(self.ids)


class TextTokenizer:
    """Tokenizes texts for one model. Cheap to call from several threads at once."""

    def __init__(self, backend: Tokenizer, max_tokens: int, lower_case: bool = False,
                 chunking: bool = False, chunk_overlap: int = 64, max_chunks: int = 32):
        self.max_tokens = max_tokens
        self.lower_case = lower_case
        self.chunking = chunking
        self.max_chunks = max_chunks
        self._truncating = Tokenizer.from_str(backend.to_str())
        self._truncating.no_padding()
        self._truncating.enable_truncation(max_tokens)
        self._plain = Tokenizer.from_str(backend.to_str())
        self._plain.no_padding()
        self._plain.no_truncation()
        self.num_special = self._plain.post_processor.num_special_tokens_to_add(False) \
            if self._plain.post_processor is not None else 0
        pre = backend.pre_tokenizer
        self.space_cut = pre is not None and splits_at_spaces(json.loads(pre.__getstate__()))
        self._chars_per_token = 2.0  # running estimate for the first cut (moves with what it sees)
        # Content tokens per chunk: room for the special tokens, the prefix (measured per call)
        # and a few tokens of slack, because a chunk's text is tokenized again with its prefix.
        self.chunk_overlap = chunk_overlap
        if chunking and not 0 <= chunk_overlap < max_tokens // 2:
            raise EncoderConfigError(
                f"model.chunking.overlap must be between 0 and {max_tokens // 2 - 1} (max_tokens/2); got {chunk_overlap}")

    def tokenize(self, texts: list[str], prefix: str = "", chunked: bool | None = None) -> TokenizedTexts:
        """Token ids for `prefix + text` of every text; called once per batch of incoming texts.
        `chunked`: None follows the chunking setting, False truncates whatever the setting."""
        if self.lower_case:
            prefix, texts = prefix.lower(), [t.lower() for t in texts]
        if not (self.chunking if chunked is None else chunked):
            out = TokenizedTexts()
            out.ids = self._tokenize_truncated([prefix + t for t in texts])
            out.doc = list(range(len(texts)))
            out.chunk = [0] * len(texts)
            return out
        return self._tokenize_chunked(texts, prefix)

    def _tokenize_truncated(self, full_texts: list[str]) -> list[list[int]]:
        if self.space_cut:
            return self._tokenize_space_cut(full_texts)
        return self._tokenize_char_cut(full_texts)

    def _tokenize_char_cut(self, full_texts: list[str]) -> list[list[int]]:
        cut_at = self.max_tokens * CHARS_PER_TOKEN_BOUND + CUT_MARGIN_CHARS
        inputs = [t if len(t) <= cut_at else t[:cut_at] for t in full_texts]
        encodings = self._truncating.encode_batch_fast(inputs)
        ids = [e.ids for e in encodings]
        cut = [i for i, t in enumerate(full_texts) if len(t) > cut_at]
        if cut:
            # A cut text is safe when its truncated tokens end well before the cut; otherwise
            # (very long tokens) it is tokenized whole.
            with_offsets = self._truncating.encode_batch([inputs[i] for i in cut])
            redo = [i for i, enc in zip(cut, with_offsets) if not _ends_before(enc, cut_at - CUT_MARGIN_CHARS)]
            if redo:
                for i, enc in zip(redo, self._truncating.encode_batch_fast([full_texts[i] for i in redo])):
                    ids[i] = enc.ids
        return ids

    def _tokenize_space_cut(self, texts: list[str]) -> list[list[int]]:
        """Exact truncation without tokenizing what is thrown away: each long text is cut at a
        space a little past where the limit is expected; a cut that yields too few tokens is
        widened (from the ratio it showed) until it does, or the whole text is taken."""
        need = self.max_tokens - self.num_special + CUT_SPARE_TOKENS
        ids: list[list[int] | None] = [None] * len(texts)
        cuts = [_space_cut(t, int(need * self._chars_per_token * 1.25) + 16) for t in texts]
        char_bound = self.max_tokens * CHARS_PER_TOKEN_BOUND + CUT_MARGIN_CHARS
        todo = list(range(len(texts)))
        chars = tokens = 0
        while todo:
            spaceless = [i for i in todo if cuts[i] >= len(texts[i]) > char_bound]  # no space to cut at
            if spaceless:
                for i, seq in zip(spaceless, self._tokenize_char_cut([texts[i] for i in spaceless])):
                    ids[i] = seq
                todo = [i for i in todo if ids[i] is None]
                if not todo:
                    break
            encodings = self._truncating.encode_batch_fast([texts[i][:cuts[i]] for i in todo])
            again = []
            for i, enc in zip(todo, encodings):
                whole = cuts[i] >= len(texts[i])
                over = 0 if whole else self._overflow(enc)
                if whole or over >= CUT_SPARE_TOKENS:
                    ids[i] = enc.ids
                    if not whole:
                        chars += cuts[i]
                        tokens += len(enc.ids) + over
                    continue
                got = max(1, len(enc.ids) - self.num_special + over)
                wider = _space_cut(texts[i], int(cuts[i] * need / got * 1.3) + 64)
                # a long run of spaces can send the cut back to where it was: take the whole text
                cuts[i] = wider if wider > cuts[i] else len(texts[i])
                again.append(i)
            todo = again
        if tokens:
            self._chars_per_token = 0.8 * self._chars_per_token + 0.2 * (chars / tokens)
        return ids  # type: ignore[return-value]

    def _overflow(self, encoding) -> int:
        """Content tokens past the limit (0 when the text was not truncated)."""
        return sum(len(o.ids) - self.num_special for o in encoding.overflowing)

    def _tokenize_chunked(self, texts: list[str], prefix: str) -> TokenizedTexts:
        prefix_len = len(self._plain.encode(prefix, add_special_tokens=False).ids) if prefix else 0
        window = self.max_tokens - self.num_special - prefix_len - 4
        stride = window - self.chunk_overlap
        if stride <= 0:
            raise EncoderConfigError(
                f"model.chunking.overlap {self.chunk_overlap} leaves no room in a {self.max_tokens}-token window")
        limit = (window + stride * (self.max_chunks - 1)) * CHARS_PER_TOKEN_BOUND + CUT_MARGIN_CHARS
        bare = self._plain.encode_batch([t[:limit] for t in texts], add_special_tokens=False)
        out = TokenizedTexts()
        chunk_texts: list[str] = []
        for doc, (text, enc) in enumerate(zip(texts, bare)):
            offsets = enc.offsets
            if len(offsets) <= window:
                spans = [(0, len(text))]
            else:
                spans = []
                for start in range(0, len(offsets), stride):
                    end = min(start + window, len(offsets))
                    spans.append((offsets[start][0], offsets[end - 1][1]))
                    if end == len(offsets) or len(spans) == self.max_chunks:
                        break
            for number, (a, b) in enumerate(spans):
                chunk_texts.append(prefix + text[a:b])
                out.doc.append(doc)
                out.chunk.append(number)
        out.ids = self._tokenize_truncated(chunk_texts)
        return out

    def tokenize_whole(self, texts: list[str], prefix: str = "") -> list[list[int]]:
        """Token ids of each `prefix + text`, special tokens included and nothing truncated; the
        query service's: it counts them (usage, its too-long check) and embeds those within
        max_tokens as they are (they equal what `tokenize` gives for them)."""
        if self.lower_case:
            prefix, texts = prefix.lower(), [t.lower() for t in texts]
        return [e.ids for e in self._plain.encode_batch([prefix + t for t in texts])]

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with special tokens, untruncated; for reports and tests."""
        return len(self._plain.encode(text).ids)


def splits_at_spaces(pre_tokenizer: dict | None) -> bool:
    """Whether no token can span a space: Metaspace with splitting, the whitespace splitters,
    or a Sequence holding one of them."""
    if not pre_tokenizer:
        return False
    kind = pre_tokenizer.get("type")
    if kind == "Sequence":
        return any(splits_at_spaces(p) for p in pre_tokenizer.get("pretokenizers", []))
    return (kind == "Metaspace" and pre_tokenizer.get("split", True)) or kind in SPACE_SPLITTERS


def _space_cut(text: str, at: int) -> int:
    """A cut position at or after `at`: before the first space of a run of spaces (so the
    prefix ends in a non-space), or the whole text."""
    if at >= len(text):
        return len(text)
    cut = text.find(" ", at)
    if cut < 0:
        return len(text)
    while cut > 0 and text[cut - 1] == " ":
        cut -= 1
    return cut if cut > 0 else len(text)


def _ends_before(encoding, char_limit: int) -> bool:
    ends = [end for (start, end), special in zip(encoding.offsets, encoding.special_tokens_mask) if not special]
    return bool(ends) and max(ends) <= char_limit


class TokenizerProcesses:
    """Tokenizing in N processes of its own (spawned, so no lock of the parent is inherited), for
    a GPU worker that needs more than one core's worth of tokenizing. `submit` returns a Future
    of TokenizedTexts, like the thread pool's. `close()` stops them."""

    def __init__(self, tokenizer: TextTokenizer, processes: int):
        self._spec = (tokenizer._plain.to_str(), tokenizer.max_tokens, tokenizer.lower_case, tokenizer.chunking,
                      tokenizer.chunk_overlap, tokenizer.max_chunks)
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> ProcessPoolExecutor:
        """Start the processes and load the tokenizer in each (called when the encoder loads, so
        a worker pays for it in setup, not on its first documents)."""
        if self._pool is None:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_child, initargs=self._spec)
            for future in [self._pool.submit(_tokenize_in_child, ["warm up"], "", False) for _ in range(self.processes)]:
                future.result()
        return self._pool

    def submit(self, texts: list[str], prefix: str, chunked: bool | None = None):
        return self.start().submit(_tokenize_in_child, texts, prefix, chunked)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


_CHILD: TextTokenizer | None = None


def _start_child(tokenizer_json: str, max_tokens: int, lower_case: bool, chunking: bool, overlap: int,
                 max_chunks: int) -> None:
    global _CHILD
    _CHILD = TextTokenizer(Tokenizer.from_str(tokenizer_json), max_tokens, lower_case, chunking, overlap, max_chunks)


def _tokenize_in_child(texts: list[str], prefix: str, chunked: bool | None) -> TokenizedTexts:
    assert _CHILD is not None
    return _CHILD.tokenize(texts, prefix, chunked)
