"""DeadLetterPublisher with a fake producer (no Kafka): acknowledged rejections release their
slot, refused ones are counted and logged once, headers and values are cut to fit."""

import logging

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from workers.documents import RecordOrigin, Rejection
from workers.kafka.dead_letters import HEADER_ROOM, DeadLetterPublisher, dlq_headers, fit_headers
from workers.settings import KafkaSettings


class FakeFuture:
    def __init__(self):
        self.callbacks, self.errbacks = [], []

    def add_callback(self, fn):
        self.callbacks.append(fn)

    def add_errback(self, fn):
        self.errbacks.append(fn)


class FakeProducer:
    def __init__(self, refuse_with=None):
        self.sent, self.futures, self.refuse_with = [], [], refuse_with

    def send(self, topic, key=None, value=None, headers=None):
        if self.refuse_with is not None:
            raise self.refuse_with
        self.sent.append((topic, key, value, headers))
        self.futures.append(FakeFuture())
        return self.futures[-1]

    def flush(self, timeout=None):
        pass


def publisher(producer, max_message_bytes=1_000_000) -> DeadLetterPublisher:
    pub = DeadLetterPublisher(KafkaSettings(topic="news", max_message_bytes=max_message_bytes))
    pub._producer = producer  # what setup() opens
    return pub


def rejection(offset=7, value=b"{bad json", headers=()) -> Rejection:
    return Rejection("invalid_json", "Expecting value", RecordOrigin("news", 2, offset, b"k", 1764000000000, headers),
                     value)


def test_an_acknowledged_rejection_calls_back_and_counts():
    producer, acked = FakeProducer(), []
    pub = publisher(producer)
    pub.publish(rejection(), lambda: acked.append(1))
    assert pub.unacked()[0] == 1 and acked == []
    topic, key, value, headers = producer.sent[0]
    assert (topic, key, value) == ("news.dlq", b"k", b"{bad json")
    assert dict(headers)["embedworker.error.code"] == b"invalid_json"
    assert dict(headers)["embedworker.source.offset"] == b"7"
    producer.futures[0].callbacks[0](None)
    assert acked == [1] and pub.unacked()[0] == 0 and pub.published == 1


def test_a_refused_rejection_is_counted_reported_and_logged_once(caplog):
    producer, acked = FakeProducer(), []
    pub = publisher(producer)
    pub.publish(rejection(), lambda: acked.append(1))
    with caplog.at_level(logging.WARNING, logger="embedworker.dlq"):
        for _ in range(3):  # the broker refuses it; resend_unacked sends it again each period
            producer.futures[-1].errbacks[0](KafkaTimeoutError("batch expired"))
            pub.resend_unacked(older_than_s=-1)
    assert len([r for r in caplog.records if "did not take" in r.message]) == 1
    assert pub.unacked()[0] == 1 and "KafkaTimeoutError" in pub.last_error and acked == []
    producer.futures[-1].callbacks[0](None)
    assert acked == [1] and pub.unacked() == (0, 0.0) and pub.last_error is None


def test_a_send_that_raises_keeps_the_rejection_for_the_next_resend():
    pub = publisher(FakeProducer(refuse_with=MessageSizeTooLargeError("too large")))
    pub.publish(rejection(), lambda: None)
    assert pub.unacked()[0] == 1 and "MessageSizeTooLargeError" in pub.last_error


def test_oversized_values_and_headers_are_cut_to_fit():
    producer = FakeProducer()
    pub = publisher(producer, max_message_bytes=64 * 1024)
    big_headers = tuple((f"h{i}", b"x" * 2000) for i in range(40))  # 80 KB of the producer's headers
    pub.publish(rejection(value=b"v" * 100_000, headers=big_headers), lambda: None)
    _, _, value, headers = producer.sent[0]
    names = dict(headers)
    assert len(value) == 64 * 1024 - HEADER_ROOM and names["embedworker.value_truncated"] == b"100000"
    assert sum(len(k) + len(v) + 8 for k, v in headers) <= HEADER_ROOM
    assert int(names["embedworker.headers_truncated"]) > 0 and names["embedworker.error.code"] == b"invalid_json"
    assert "h0" in names, "the first of the record's own headers are kept"


def test_headers_that_fit_are_untouched():
    headers = dlq_headers(rejection(headers=(("trace", b"abc"),)))
    assert fit_headers(headers) == headers and headers[0] == ("trace", b"abc")
