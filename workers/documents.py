"""The message contract: one Kafka record value (UTF-8 JSON object) -> a Document or a Rejection.

Bad records are values, never exceptions: `parse_record` always returns, and a Rejection
carries a stable reason code, a human message and the original bytes for the dead-letter topic.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

# Reason codes (stable: they appear in DLQ headers, metrics and rejects files).
NULL_VALUE = "null_value"              # a tombstone / record without a value
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"          # not JSON, truncated, nesting too deep
DUPLICATE_KEY = "duplicate_key"        # the same field twice in one object
NON_FINITE_NUMBER = "non_finite_number"  # NaN, Infinity
NOT_AN_OBJECT = "not_an_object"        # array, string, number, true/false, null
MISSING_FIELD = "missing_field"
EMPTY_FIELD = "empty_field"            # empty, or only whitespace/control characters
WRONG_TYPE = "wrong_type"
TOO_LARGE = "too_large"                # a field or the record over its byte limit
INVALID_ID = "invalid_id"              # control characters in the id
UNKNOWN_OP = "unknown_op"
INVALID_TIMESTAMP = "invalid_timestamp"  # published_at not RFC 3339 with an offset
TIMESTAMP_IN_FUTURE = "timestamp_in_future"  # published_at after ingestion + documents.max_future_s
TIMESTAMP_TOO_OLD = "timestamp_too_old"      # published_at before documents.min_published_year
INVALID_ATTRS = "invalid_attrs"        # not an object of scalars, too many keys

REASON_CODES = (NULL_VALUE, INVALID_UTF8, INVALID_JSON, DUPLICATE_KEY, NON_FINITE_NUMBER, NOT_AN_OBJECT,
                MISSING_FIELD, EMPTY_FIELD, WRONG_TYPE, TOO_LARGE, INVALID_ID, UNKNOWN_OP, INVALID_TIMESTAMP,
                TIMESTAMP_IN_FUTURE, TIMESTAMP_TOO_OLD, INVALID_ATTRS)
METADATA_FIELDS = ("title", "url", "source", "lang")


@dataclass(frozen=True)
class DocumentLimits:
    max_record_bytes: int = 4 * 1024 * 1024
    max_id_bytes: int = 512
    max_text_bytes: int = 1024 * 1024
    max_field_bytes: int = 8192      # title, url, source, lang
    max_attrs_bytes: int = 16384     # attrs as JSON
    max_attrs_keys: int = 64
    # A published_at from a wrong clock (in the future) or a zero value (year 1, 1800) is rejected
    # with a reason, not clamped: it would sort first or last forever and defeat retention.
    max_future_s: float = 86_400
    min_published_year: int = 1900


@dataclass(frozen=True)
class RecordOrigin:
    """Where a record came from: plain data, so nothing downstream needs Kafka types."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Document:
    """A valid record (made once per record on the hot path: slots, not frozen; treat it as
    read-only)."""

    id: str
    op: str                      # "upsert" or "delete"
    origin: RecordOrigin
    text: str = ""
    title: str | None = None
    url: str | None = None
    source: str | None = None
    lang: str | None = None
    published_at: datetime | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def embed_text(self, template: str = "{title}\n{text}") -> str:
        """The text handed to the encoder (the encoder adds the document prefix)."""
        if not self.title:
            return self.text
        return template.format(title=self.title, text=self.text)


@dataclass(frozen=True)
class Rejection:
    code: str
    message: str
    origin: RecordOrigin
    value: bytes | None


class _Reject(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def parse_record(value: bytes | None, origin: RecordOrigin, limits: DocumentLimits = DocumentLimits()) -> Document | Rejection:
    """Validate one record value against the contract. Never raises for bad input."""
    try:
        return _parse(value, origin, limits)
    except _Reject as r:
        return Rejection(r.code, str(r), origin, value)
    except UnicodeEncodeError:  # a \ud800-style escape: JSON allows it, UTF-8 cannot hold it
        return Rejection(INVALID_UTF8, "value holds an unpaired surrogate escape (\\ud800-\\udfff)", origin, value)


def _parse(value: bytes | None, origin: RecordOrigin, limits: DocumentLimits) -> Document:
    if value is None:
        raise _Reject(NULL_VALUE, "record has no value (a tombstone); send {\"id\": ..., \"op\": \"delete\"} to delete")
    if len(value) > limits.max_record_bytes:
        raise _Reject(TOO_LARGE, f"record is {len(value)} bytes, over the limit of {limits.max_record_bytes}")
    obj = _fast_loads(value)
    if obj is None:
        obj = _strict_loads(value)
    if not isinstance(obj, dict):
        raise _Reject(NOT_AN_OBJECT, f"value must be a JSON object, got {_json_type(obj)}")
    return _validate(obj, origin, limits)


def _fast_loads(value: bytes) -> Any:
    """orjson's parse, taken only when it is certain to equal the strict one: valid UTF-8 and
    RFC 8259 JSON (else orjson refuses), and no key twice in any object: every ':' of the raw
    text is either one of the parsed pairs or one inside a parsed string, unless a key was
    dropped (or a colon came as the escape \\u003a, which sends it to the strict path too).
    None means "use the strict parser" (which also names the exact problem)."""
    if b"\\u003" in value:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    pairs, colons = _pairs_and_colons(obj)
    return obj if value.count(b":") == pairs + colons else None


def _pairs_and_colons(v: Any) -> tuple[int, int]:
    """(key-value pairs, colons inside keys and strings) of a value orjson parsed (exact dict,
    list and str types), in one breadth-first walk: containers append their members to the list
    being walked, so flat and nested values take the same path."""
    pairs = colons = 0
    pending = [v]
    for x in pending:
        if type(x) is str:
            colons += x.count(":")
        elif type(x) is dict:
            pairs += len(x)
            for k in x:
                colons += k.count(":")
            pending.extend(x.values())
        elif type(x) is list:
            pending.extend(x)
    return pairs, colons


def _strict_loads(value: bytes) -> Any:
    try:
        raw = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject(INVALID_UTF8, f"value is not valid UTF-8: {e.reason} at byte {e.start}") from None
    try:
        return json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except _Reject:
        raise
    except RecursionError:
        raise _Reject(INVALID_JSON, "value is not valid JSON: nesting too deep") from None
    except json.JSONDecodeError as e:
        raise _Reject(INVALID_JSON, f"value is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _validate(obj: dict, origin: RecordOrigin, limits: DocumentLimits) -> Document:
    doc_id = _required_string(obj, "id")
    if len(doc_id.encode("utf-8")) > limits.max_id_bytes:
        raise _Reject(TOO_LARGE, f"field 'id' is {len(doc_id.encode('utf-8'))} bytes, over the limit of {limits.max_id_bytes}")
    # isprintable() is False for every category-C character (and for separators), so the
    # per-character check only runs for ids that hold something unusual.
    if not doc_id.isprintable() and any(unicodedata.category(c)[0] == "C" for c in doc_id):
        raise _Reject(INVALID_ID, "field 'id' contains control or unassigned characters")
    if doc_id.strip() != doc_id or not doc_id.strip():
        raise _Reject(INVALID_ID if doc_id.strip() else EMPTY_FIELD,
                      "field 'id' must not be blank or start/end with whitespace")

    op = obj.get("op", "upsert")
    if not isinstance(op, str):
        raise _Reject(WRONG_TYPE, f"field 'op' must be a string, got {_json_type(op)}")
    if op not in ("upsert", "delete"):
        raise _Reject(UNKNOWN_OP, f"field 'op' must be 'upsert' or 'delete', got {op[:40]!r}")

    text = ""
    if op == "upsert":
        text = _required_string(obj, "text")
        if len(text.encode("utf-8")) > limits.max_text_bytes:
            raise _Reject(TOO_LARGE, f"field 'text' is {len(text.encode('utf-8'))} bytes, over the limit of {limits.max_text_bytes}")
        if not _has_visible_content(text):
            raise _Reject(EMPTY_FIELD, "field 'text' is empty after removing whitespace and control characters")
    elif "text" in obj and not isinstance(obj["text"], str):
        raise _Reject(WRONG_TYPE, f"field 'text' must be a string, got {_json_type(obj['text'])}")

    meta = {}
    for name in METADATA_FIELDS:
        v = obj.get(name)
        if v is None:
            continue
        if not isinstance(v, str):
            raise _Reject(WRONG_TYPE, f"field {name!r} must be a string, got {_json_type(v)}")
        if len(v.encode("utf-8")) > limits.max_field_bytes:
            raise _Reject(TOO_LARGE, f"field {name!r} is over the limit of {limits.max_field_bytes} bytes")
        meta[name] = v.strip() or None

    return Document(id=doc_id, op=op, origin=origin, text=text, published_at=_published_at(obj.get("published_at"), limits),
                    attrs=_attrs(obj.get("attrs"), limits), **meta)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise _Reject(DUPLICATE_KEY, f"field {k[:40]!r} appears more than once in an object")
        obj[k] = v
    return obj


def _no_constants(name: str):
    raise _Reject(NON_FINITE_NUMBER, f"{name} is not a valid JSON number")


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _required_string(obj: dict, name: str) -> str:
    if name not in obj or obj[name] is None:
        raise _Reject(MISSING_FIELD, f"field {name!r} is required")
    v = obj[name]
    if not isinstance(v, str):
        raise _Reject(WRONG_TYPE, f"field {name!r} must be a string, got {_json_type(v)}")
    if not v:
        raise _Reject(EMPTY_FIELD, f"field {name!r} is empty")
    return v


def _has_visible_content(text: str) -> bool:
    stripped = text.lstrip()
    if stripped and unicodedata.category(stripped[0])[0] not in "CZ":
        return True  # the usual case, decided by the first character that is not a space
    return any(not c.isspace() and unicodedata.category(c)[0] not in ("C", "Z") for c in text)


def _published_at(v: Any, limits: DocumentLimits) -> datetime | None:
    if v is None:
        return None
    if not isinstance(v, str):
        raise _Reject(WRONG_TYPE, f"field 'published_at' must be an RFC 3339 string, got {_json_type(v)}")
    try:
        ts = datetime.fromisoformat(v.strip().replace("z", "Z"))
    except ValueError:
        raise _Reject(INVALID_TIMESTAMP, f"field 'published_at' is not an RFC 3339 timestamp: {v[:40]!r}") from None
    if ts.tzinfo is None or len(v.strip()) < 20 or "T" not in v.upper():
        raise _Reject(INVALID_TIMESTAMP,
                      f"field 'published_at' needs a date, a time and an offset (e.g. 2026-11-27T09:00:00+09:00): {v[:40]!r}")
    ts = ts.astimezone(UTC)
    ahead = (ts - datetime.now(UTC)).total_seconds()
    if ahead > limits.max_future_s:
        raise _Reject(TIMESTAMP_IN_FUTURE, f"field 'published_at' is {ahead / 3600:,.1f} h after its ingestion time "
                                           f"(a wrong clock? documents.max_future_s allows {limits.max_future_s:g} s): "
                                           f"{v[:40]!r}")
    if ts.year < limits.min_published_year:
        raise _Reject(TIMESTAMP_TOO_OLD, f"field 'published_at' is before {limits.min_published_year} (a zero or "
                                         f"default date? documents.min_published_year): {v[:40]!r}")
    return ts


def _attrs(v: Any, limits: DocumentLimits) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _Reject(INVALID_ATTRS, f"field 'attrs' must be an object, got {_json_type(v)}")
    if len(v) > limits.max_attrs_keys:
        raise _Reject(INVALID_ATTRS, f"field 'attrs' has {len(v)} keys, over the limit of {limits.max_attrs_keys}")
    for k, x in v.items():
        if not (x is None or isinstance(x, (str, int, float, bool))):
            raise _Reject(INVALID_ATTRS, f"attrs.{k[:40]} must be a string, number, boolean or null, got {_json_type(x)}")
        if isinstance(x, float) and not math.isfinite(x):
            raise _Reject(NON_FINITE_NUMBER, f"attrs.{k[:40]} is not a finite number")
    if len(json.dumps(v, ensure_ascii=False).encode("utf-8")) > limits.max_attrs_bytes:
        raise _Reject(TOO_LARGE, f"field 'attrs' is over the limit of {limits.max_attrs_bytes} bytes")
    return dict(v)
