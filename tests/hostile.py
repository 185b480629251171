"""A corpus of bad records (each with the reason code it must get) and tricky valid ones."""

from __future__ import annotations

import json

from workers import documents as d

BIG = 1024 * 1024  # the default text limit


def _j(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def bad_records(near_broker_max: int = 3_900_000) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(name, key, value, expected reason code) for 54 kinds of bad input."""
    k = lambda name: f"bad-{name}".encode()  # noqa: E731
    rows = [
        ("invalid-utf8-prefix", b"\xff\xfe{\"id\": \"a\"}", d.INVALID_UTF8),
        ("invalid-utf8-in-string", b'{"id": "u1", "text": "\xc3\x28 caf\xe9"}', d.INVALID_UTF8),
        ("utf16-json", '{"id": "u16", "text": "x"}'.encode("utf-16"), d.INVALID_UTF8),
        ("unpaired-surrogate", b'{"id": "sur", "text": "a\\ud800b"}', d.INVALID_UTF8),
        ("truncated-json", b'{"id": "t1", "text": "the quick bro', d.INVALID_JSON),
        ("not-json", b"breaking news: not json at all", d.INVALID_JSON),
        ("empty-bytes", b"", d.INVALID_JSON),
        ("whitespace-bytes", b"  \n ", d.INVALID_JSON),
        ("utf8-bom", b'\xef\xbb\xbf{"id": "bom", "text": "x"}', d.INVALID_JSON),
        ("trailing-garbage", b'{"id": "tg", "text": "x"} extra', d.INVALID_JSON),
        ("deeply-nested-json", _nested(100_000), d.INVALID_JSON),
        ("json-array", b'[{"id": "a", "text": "x"}]', d.NOT_AN_OBJECT),
        ("json-string", b'"just a string"', d.NOT_AN_OBJECT),
        ("json-number", b"42", d.NOT_AN_OBJECT),
        ("json-null", b"null", d.NOT_AN_OBJECT),
        ("json-bool", b"true", d.NOT_AN_OBJECT),
        ("tombstone", None, d.NULL_VALUE),
        ("missing-id", _j({"text": "no id here"}), d.MISSING_FIELD),
        ("null-id", _j({"id": None, "text": "x"}), d.MISSING_FIELD),
        ("empty-id", _j({"id": "", "text": "x"}), d.EMPTY_FIELD),
        ("blank-id", _j({"id": "   ", "text": "x"}), d.EMPTY_FIELD),
        ("numeric-id", _j({"id": 12345, "text": "x"}), d.WRONG_TYPE),
        ("object-id", _j({"id": {"x": 1}, "text": "x"}), d.WRONG_TYPE),
        ("id-over-limit", _j({"id": "i" * 600, "text": "x"}), d.TOO_LARGE),
        ("id-nul-char", _j({"id": "a\u0000b", "text": "x"}), d.INVALID_ID),
        ("id-newline", _j({"id": "a\nb", "text": "x"}), d.INVALID_ID),
        ("id-leading-space", _j({"id": " lead", "text": "x"}), d.INVALID_ID),
        ("missing-text", _j({"id": "nt"}), d.MISSING_FIELD),
        ("empty-text", _j({"id": "et", "text": ""}), d.EMPTY_FIELD),
        ("whitespace-text", _j({"id": "wt", "text": " \n\t\u3000 "}), d.EMPTY_FIELD),
        ("control-text", _j({"id": "ct", "text": "\u0000\u0001\u200b\u0007"}), d.EMPTY_FIELD),
        ("numeric-text", _j({"id": "nt2", "text": 3.14}), d.WRONG_TYPE),
        ("array-text", _j({"id": "at", "text": ["a", "b"]}), d.WRONG_TYPE),
        ("text-over-limit", _j({"id": "big", "text": "가" * (BIG // 3 + 1000)}), d.TOO_LARGE),
        ("near-broker-max", _j({"id": "huge", "text": "x" * near_broker_max}), d.TOO_LARGE),
        ("nested-attrs", _j({"id": "na", "text": "x", "attrs": {"a": {"b": {"c": 1}}}}), d.INVALID_ATTRS),
        ("array-attrs", _j({"id": "aa", "text": "x", "attrs": [1, 2]}), d.INVALID_ATTRS),
        ("list-attr-value", _j({"id": "lv", "text": "x", "attrs": {"tags": ["a"]}}), d.INVALID_ATTRS),
        ("too-many-attrs", _j({"id": "tm", "text": "x", "attrs": {f"k{i}": i for i in range(100)}}), d.INVALID_ATTRS),
        ("nan", b'{"id": "nan", "text": "x", "attrs": {"score": NaN}}', d.NON_FINITE_NUMBER),
        ("infinity", b'{"id": "inf", "text": "x", "attrs": {"score": Infinity}}', d.NON_FINITE_NUMBER),
        ("minus-infinity", b'{"id": "ninf", "text": "x", "attrs": {"score": -Infinity}}', d.NON_FINITE_NUMBER),
        ("duplicate-keys", b'{"id": "dup1", "id": "dup2", "text": "x"}', d.DUPLICATE_KEY),
        ("unknown-op", _j({"id": "op1", "text": "x", "op": "merge"}), d.UNKNOWN_OP),
        ("numeric-op", _j({"id": "op2", "text": "x", "op": 1}), d.WRONG_TYPE),
        ("bad-published-at", _j({"id": "p1", "text": "x", "published_at": "yesterday"}), d.INVALID_TIMESTAMP),
        ("naive-published-at", _j({"id": "p2", "text": "x", "published_at": "2026-11-27T09:00:00"}), d.INVALID_TIMESTAMP),
        ("date-only-published-at", _j({"id": "p3", "text": "x", "published_at": "2026-11-27"}), d.INVALID_TIMESTAMP),
        ("future-published-at", _j({"id": "p4", "text": "x", "published_at": "2099-01-01T00:00:00+09:00"}),
         d.TIMESTAMP_IN_FUTURE),
        ("zero-published-at", _j({"id": "p5", "text": "x", "published_at": "0001-01-01T00:00:00Z"}), d.TIMESTAMP_TOO_OLD),
        ("numeric-published-at", _j({"id": "p4", "text": "x", "published_at": 1764000000}), d.WRONG_TYPE),
        ("numeric-title", _j({"id": "ti", "text": "x", "title": 7}), d.WRONG_TYPE),
        ("object-lang", _j({"id": "la", "text": "x", "lang": {"code": "ko"}}), d.WRONG_TYPE),
        ("url-over-limit", _j({"id": "ur", "text": "x", "url": "https://e.x/" + "a" * 10000}), d.TOO_LARGE),
    ]
    return [(name, k(name), value, code) for name, value, code in rows]


def tricky_valid_records() -> list[tuple[str, bytes, bytes]]:
    """(id, key, value) of valid records that look odd; the last one per id wins."""
    rows = [
        {"id": "emoji-1", "text": "🚀 Launch day! 발사 성공 🎉", "lang": "ko"},
        {"id": "mixed-scripts", "text": "서울 Tokyo 東京 Москва مرحبا नमस्ते", "title": "다국어 Mixed"},
        {"id": "spaces-around", "text": "   leading and trailing spaces   "},
        {"id": "extra-fields", "text": "unknown fields are ignored", "priority": 5, "tags": ["a"]},
        {"id": "zulu-time", "text": "time in UTC", "published_at": "2026-11-27T00:00:00.123456Z"},
        {"id": "null-attrs", "text": "attrs with nulls", "attrs": {"section": None, "rank": 3, "hot": True}},
        {"id": "id with spaces and 한글/슬래시#hash", "text": "ids may hold any printable characters"},
        {"id": "repeated", "text": "first version"},
        {"id": "repeated", "text": "second version"},
        {"id": "repeated", "text": "third and final version", "title": "final"},
    ]
    return [(r["id"], r["id"].encode(), _j(r)) for r in rows]
