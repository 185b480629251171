"""Kafka out, for rejected records: the dead-letter topic (default `<topic>.dlq`).

Each rejected record is published with its original key and bytes and headers naming the
error code and message and the source topic, partition, offset and timestamp. The original
headers are kept, and of ours only `embedworker.redriven_from` (a re-driven record rejected again). A record whose bytes plus headers exceed the producer's limit is published
with its value cut to fit and the header `embedworker.value_truncated` set to its full size;
original headers beyond HEADER_ROOM are dropped (`embedworker.headers_truncated`: how many).

A rejection holds its partition's commits until the DLQ acknowledges it. One that the DLQ does
not take is logged once with the reason, counted in `unacked()` (the worker's
`embedworker_dlq_unacked` gauge and a `status` problem) and sent again every RESEND_AFTER_S.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError

from workers.documents import Rejection
from workers.errors import SourceError
from workers.kafka.clients import kafka_error_message, new_producer
from workers.settings import KafkaSettings

log = logging.getLogger("embedworker.dlq")
HEADER_ROOM = 16 * 1024
RESEND_AFTER_S = 30.0  # a rejection the broker has not acknowledged by then is sent again
# How long a send may wait for the topic's metadata or buffer room (kafka-python's default is
# 60 s, on the polling thread): past it the send is refused, and sent again later.
MAX_BLOCK_MS = 2000


def dlq_headers(rej: Rejection) -> list[tuple[str, bytes]]:
    o = rej.origin
    extra = [("embedworker.error.code", rej.code.encode()), ("embedworker.error.message", rej.message.encode()[:2000]),
             ("embedworker.source.topic", o.topic.encode()), ("embedworker.source.partition", str(o.partition).encode()),
             ("embedworker.source.offset", str(o.offset).encode())]
    if o.timestamp_ms is not None:
        extra.append(("embedworker.source.timestamp", str(o.timestamp_ms).encode()))
    kept = [h for h in o.headers if not h[0].startswith("embedworker.") or h[0] == "embedworker.redriven_from"]
    return kept + extra


def fit_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """`headers` within HEADER_ROOM bytes: the record's own headers are dropped from the last
    until the rest fits (the embedworker.* headers, at most ~2.3 KB, always stay)."""
    size = sum(len(k) + len(v) + 8 for k, v in headers)
    if size <= HEADER_ROOM:
        return headers
    own = [h for h in headers if not h[0].startswith("embedworker.")]
    ours = [h for h in headers if h[0].startswith("embedworker.")]
    dropped = 0
    while own and size > HEADER_ROOM - 64:
        k, v = own.pop()
        size -= len(k) + len(v) + 8
        dropped += 1
    return own + ours + [("embedworker.headers_truncated", str(dropped).encode())]


class DeadLetterPublisher:
    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self.topic = settings.dead_letter_topic
        self._producer: KafkaProducer | None = None
        self.published = 0
        self._unacked: dict[tuple[str, int, int], tuple[Rejection, Callable[[], None], float]] = {}
        self._unacked_lock = threading.Lock()  # the producer's thread acknowledges
        self.last_error: str | None = None      # why the DLQ last refused a record (None once all are in)
        self._reported: set[tuple[str, int, int]] = set()  # refused records already logged

    def setup(self) -> None:
        s = self.settings
        try:
            self._producer = new_producer(s, "dlq", max_block_ms=MAX_BLOCK_MS)
        except KafkaError as exc:
            raise SourceError(kafka_error_message(exc, s)) from None

    @property
    def producer(self) -> KafkaProducer:
        """The producer; SourceError before setup() or after close()."""
        if self._producer is None:
            raise SourceError("the DLQ publisher is not open (setup() not called, or closed)")
        return self._producer

    def failure(self) -> BaseException | None:
        """The producer's sender thread (it sends and acknowledges) ended: nothing rejected
        would reach the DLQ again, and the partitions would stop committing. None while it runs."""
        sender = getattr(self._producer, "_sender", None)
        if sender is not None and not sender.is_alive():
            return RuntimeError("the dead-letter producer's sender thread ended")
        return None

    def publish(self, rej: Rejection, on_acked: Callable[[], None]) -> None:
        """Send one rejection (polling thread); `on_acked` runs in the producer's thread once the
        broker has it. Until then the rejection is kept, and `resend_unacked` sends it again."""
        o = rej.origin
        key = (o.topic, o.partition, o.offset)
        with self._unacked_lock:
            self._unacked[key] = (rej, on_acked, time.monotonic())

        def done() -> None:
            with self._unacked_lock:
                self._unacked.pop(key, None)
                self._reported.discard(key)
                if not self._unacked:
                    self.last_error = None
            on_acked()

        self._send(rej, done)

    def resend_unacked(self, older_than_s: float = RESEND_AFTER_S) -> None:
        """Send again what the broker has not acknowledged within `older_than_s` (called
        periodically from the polling thread: the DLQ is at-least-once)."""
        now = time.monotonic()
        with self._unacked_lock:
            stale = [(rej, cb) for rej, cb, sent in self._unacked.values() if now - sent > older_than_s]
        for rej, on_acked in stale:
            log.debug("re-sending unacknowledged DLQ record %s:%s:%s", rej.origin.topic, rej.origin.partition,
                      rej.origin.offset)
            self.publish(rej, on_acked)

    def unacked(self) -> tuple[int, float]:
        """(rejections not yet acknowledged, seconds the oldest has waited)."""
        now = time.monotonic()
        with self._unacked_lock:
            ages = [now - sent for _, _, sent in self._unacked.values()]
        return len(ages), round(max(ages, default=0.0), 1)

    def _refused(self, rej: Rejection, exc: Exception) -> None:
        """The DLQ did not take `rej`: one log line per record (not one per retry)."""
        o = rej.origin
        key = (o.topic, o.partition, o.offset)
        self.last_error = f"{type(exc).__name__}: {exc}"
        with self._unacked_lock:
            first = key not in self._reported
            self._reported.add(key)
        if first:
            log.warning("the DLQ topic %s did not take rejected record %s:%s:%s (%s); partition %s:%s commits no "
                        "further until it does; retrying every %.0f s", self.topic, o.topic, o.partition, o.offset,
                        self.last_error, o.topic, o.partition, RESEND_AFTER_S)

    def _send(self, rej: Rejection, on_acked: Callable[[], None]) -> None:
        value, headers = rej.value, fit_headers(dlq_headers(rej))
        limit = self.settings.max_message_bytes - HEADER_ROOM
        if value is not None and len(value) > limit:
            headers.append(("embedworker.value_truncated", str(len(value)).encode()))
            value = value[:limit]
        try:
            future = self.producer.send(self.topic, key=rej.origin.key, value=value, headers=headers)
        except KafkaError as exc:  # MessageSizeTooLargeError included
            self._refused(rej, exc)
            return

        def acked(_meta):
            self.published += 1
            on_acked()

        future.add_callback(acked)
        future.add_errback(lambda exc: self._refused(rej, exc))

    def flush(self, timeout_s: float = 30.0) -> None:
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("DLQ flush: %s", exc)

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close(timeout=10)
            self._producer = None
