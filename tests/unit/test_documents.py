"""The message contract, one rule at a time, against the hostile corpus."""

import json
from datetime import UTC, datetime

import pytest

from tests.hostile import bad_records, tricky_valid_records
from workers import documents as d

ORIGIN = d.RecordOrigin("news.docs", 2, 41, b"k", 1764000000000)


@pytest.mark.parametrize("name,key,value,code", bad_records(near_broker_max=1_500_000), ids=lambda x: x if isinstance(x, str) else "")
def test_every_kind_of_bad_record_gets_its_reason(name, key, value, code):
    result = d.parse_record(value, ORIGIN)
    assert isinstance(result, d.Rejection), f"{name} was accepted"
    assert result.code == code, f"{name}: {result.code} ({result.message})"
    assert result.message and result.value == value and result.origin == ORIGIN


def test_the_corpus_is_large_and_covers_every_reason():
    rows = bad_records()
    assert len(rows) >= 40
    assert {code for *_, code in rows} == set(d.REASON_CODES)


def test_tricky_valid_records_are_accepted():
    for doc_id, _, value in tricky_valid_records():
        doc = d.parse_record(value, ORIGIN)
        assert isinstance(doc, d.Document), getattr(doc, "message", "")
        assert doc.id == doc_id


def test_full_document_fields():
    value = (b'{"id": "n1", "title": " Title ", "text": "Body", "url": "https://x", "source": "yonhap",'
             b' "lang": "ko", "published_at": "2026-11-27T18:30:00+09:00", "attrs": {"section": "economy", "rank": 2}}')
    doc = d.parse_record(value, ORIGIN)
    assert doc.op == "upsert" and doc.title == "Title" and doc.lang == "ko" and doc.source == "yonhap"
    assert doc.published_at == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    assert doc.attrs == {"section": "economy", "rank": 2}
    assert doc.embed_text() == "Title\nBody"
    assert doc.embed_text("[{title}] {text}") == "[Title] Body"
    assert d.parse_record(b'{"id": "n2", "text": "Body only"}', ORIGIN).embed_text() == "Body only"


def test_delete_needs_no_text_but_checks_its_type():
    doc = d.parse_record(b'{"id": "gone", "op": "delete"}', ORIGIN)
    assert isinstance(doc, d.Document) and doc.op == "delete" and doc.text == ""
    assert d.parse_record(b'{"id": "gone", "op": "delete", "text": 1}', ORIGIN).code == d.WRONG_TYPE


def test_limits_are_configurable():
    limits = d.DocumentLimits(max_text_bytes=10, max_id_bytes=4)
    assert d.parse_record(b'{"id": "abcd", "text": "0123456789"}', ORIGIN, limits).id == "abcd"
    assert d.parse_record(b'{"id": "abcde", "text": "x"}', ORIGIN, limits).code == d.TOO_LARGE
    assert d.parse_record(b'{"id": "a", "text": "01234567890"}', ORIGIN, limits).code == d.TOO_LARGE
    big = d.DocumentLimits(max_record_bytes=100)
    assert d.parse_record(b'{"id": "a", "text": "' + b"x" * 200 + b'"}', ORIGIN, big).code == d.TOO_LARGE


@pytest.mark.parametrize("value", [
    b'{"id": "a:1", "text": "at 10:30", "id": "b"}',                       # colons in values, a key twice
    b'{"id": "a", "text": "t", "attrs": {"k:": "v:", "k:": "w"}}',           # twice inside attrs
    b'{"id": "a", "text": "x\\u003a", "n": 1, "n": 2}',                       # an escaped colon beside it
    b'{"id": "a", "text": "t", "attrs": {"a": {"b": 1, "b": 2}}}',           # nested
])
def test_the_fast_parse_never_hides_a_duplicate_key(value):
    """orjson keeps the last of duplicate keys; the colon count sends such records to the strict
    parser, which rejects them with the same reason as before."""
    result = d.parse_record(value, d.RecordOrigin("t", 0, 0))
    assert isinstance(result, d.Rejection) and result.code == d.DUPLICATE_KEY


def test_the_fast_and_the_strict_parse_agree_on_the_tricky_valid_records():
    for _, _, value in tricky_valid_records():
        strict = d._validate(d._strict_loads(value), ORIGIN, d.DocumentLimits())
        assert d.parse_record(value, ORIGIN) == strict


def test_published_at_from_a_wrong_clock_or_a_zero_date_is_rejected_in_words_within_limits():
    from datetime import UTC, datetime, timedelta

    def at(ts: datetime, **limits):
        value = json.dumps({"id": "p", "text": "x", "published_at": ts.isoformat()}).encode()
        return d.parse_record(value, ORIGIN, d.DocumentLimits(**limits))

    now = datetime.now(UTC)
    assert at(now + timedelta(hours=20)).published_at is not None  # time zones, small clock skews
    late = at(now + timedelta(days=3))
    assert late.code == d.TIMESTAMP_IN_FUTURE and "after its ingestion time" in late.message
    assert at(now + timedelta(days=3), max_future_s=7 * 86400).published_at is not None
    old = at(datetime(1899, 12, 31, tzinfo=UTC))
    assert old.code == d.TIMESTAMP_TOO_OLD and "min_published_year" in old.message
    assert at(datetime(1899, 12, 31, tzinfo=UTC), min_published_year=1800).published_at.year == 1899
