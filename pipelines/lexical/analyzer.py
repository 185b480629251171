"""Text to search terms, the same way for documents and queries.

Korean goes through Kiwi (kiwipiepy, its model from kiwipiepy-model): nouns, verb and adjective
stems, roots, numerals and Hanja are kept, particles, endings and suffixes dropped, so
"기준금리를 동결했다" and "기준금리 동결" share 기준, 금리, 동결. Latin words and numbers come from
a plain analyzer over the raw text, lowercased, with thousands separators dropped ("1,400" ->
"1400"): Kiwi splits "HBM3E" into three morphemes, the plain analyzer keeps it whole as well as
its parts. A number written against its unit ("1,400원", "3.0%") is also kept joined ("1400원").
"""

from __future__ import annotations

import re
import sys
import threading

KEEP_TAGS = frozenset({"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "SH", "MAG"})
UNITS = frozenset({"NNB", "NNG", "SW"})  # what a number may be joined to ("원", "명", "%")
LATIN = re.compile(r"[0-9A-Za-z]+(?:[.,'][0-9A-Za-z]+)*")
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
HANGUL_OR_HANJA = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3\u4e00-\u9fff]")
MIXED_PARTS = re.compile(r"[a-z]+|[0-9]+(?:\.[0-9]+)?")
LETTER, DIGIT = re.compile(r"[a-z]"), re.compile(r"[0-9]")
STOP = frozenset({"a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "is", "are", "was",
                  "were", "be", "by", "with", "as", "from", "that", "this", "it", "its"})


class KoreanEnglishAnalyzer:
    """Turns a text into terms. Cheap to construct and to pickle: Kiwi's model (~1 s, ~100 MB)
    loads on the first `terms()` call that meets Korean, once per analyzer. Thread-safe: one Kiwi,
    called under a lock (a query's analysis takes ~0.1 ms; a long build lets queries in between
    its documents)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def terms(self, text: str) -> list[str]:
        """The terms of `text`, in order, repeated as often as they occur (BM25 counts them)."""
        out = []
        for match in LATIN.finditer(text):
            word = _latin(match.group())
            if word in STOP:
                continue
            out.append(word)
            if LETTER.search(word) and DIGIT.search(word):  # "hbm3e": also "hbm" and "3"
                out += [p for p in MIXED_PARTS.findall(word) if len(p) > 1 or p.isdigit()]
        if HANGUL_OR_HANJA.search(text):
            out += self._korean(text)
        return [sys.intern(t) for t in out]  # one string per distinct term: an index holds millions

    def _korean(self, text: str) -> list[str]:
        with self._lock:
            if self._model is None:
                from kiwipiepy import Kiwi  # imported here: the model is large and only this needs it

                self._model = Kiwi(num_workers=-1)
            tokens = self._model.tokenize(text)
        out = []
        for i, tok in enumerate(tokens):
            if tok.tag in KEEP_TAGS and HANGUL_OR_HANJA.search(tok.form):
                out.append(tok.form)
            if tok.tag == "SN" and i + 1 < len(tokens):
                unit = tokens[i + 1]
                if unit.tag in UNITS and unit.start == tok.start + tok.len:
                    out.append(_latin(tok.form) + unit.form.lower())
        return out


def _latin(word: str) -> str:
    word = THOUSANDS.sub("", word).lower()
    if word.endswith("'s"):
        word = word[:-2]
    return word.replace("'", "")
