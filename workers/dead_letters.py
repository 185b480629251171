"""Kafka out, for rejected records: the dead-letter topic (default `<topic>.dlq`).

Each rejected record is published with its original key and bytes and headers naming the
error code and message and the source topic, partition, offset and timestamp. The original
headers are kept. A record whose bytes plus headers exceed the producer's limit is published
with its value cut to fit and the header `embedworker.value_truncated` set to its full size.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError

from workers.documents import Rejection
from workers.errors import SourceError
from workers.kafka_source import kafka_error_message
from workers.settings import KafkaSettings

log = logging.getLogger("embedworker.dlq")
HEADER_ROOM = 16 * 1024


def dlq_headers(rej: Rejection) -> list[tuple[str, bytes]]:
    o = rej.origin
    extra = [("embedworker.error.code", rej.code.encode()), ("embedworker.error.message", rej.message.encode()[:2000]),
             ("embedworker.source.topic", o.topic.encode()), ("embedworker.source.partition", str(o.partition).encode()),
             ("embedworker.source.offset", str(o.offset).encode())]
    if o.timestamp_ms is not None:
        extra.append(("embedworker.source.timestamp", str(o.timestamp_ms).encode()))
    return [h for h in o.headers if not h[0].startswith("embedworker.")] + extra


class DeadLetterPublisher:
    def __init__(self, settings: KafkaSettings):
        self.settings = settings
        self.topic = settings.dead_letter_topic
        self._producer: KafkaProducer | None = None
        self.published = 0
        self._unacked: dict[tuple[str, int, int], tuple[Rejection, Callable[[], None], float]] = {}
        self._unacked_lock = threading.Lock()  # the producer's thread acknowledges

    def setup(self) -> None:
        s = self.settings
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=s.bootstrap_servers.split(","), client_id=f"{s.client_id}-dlq", acks="all",
                linger_ms=5, max_request_size=s.max_message_bytes, request_timeout_ms=s.request_timeout_ms,
                bootstrap_timeout_ms=min(s.request_timeout_ms, 15000),
                **s.security.client_options())
        except KafkaError as exc:
            raise SourceError(kafka_error_message(exc, s)) from None

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
            on_acked()

        self._send(rej, done)

    def resend_unacked(self, older_than_s: float) -> None:
        """Send again what the broker has not acknowledged within `older_than_s` (called
        periodically from the polling thread: the DLQ is at-least-once)."""
        now = time.monotonic()
        with self._unacked_lock:
            stale = [(rej, cb) for rej, cb, sent in self._unacked.values() if now - sent > older_than_s]
        for rej, on_acked in stale:
            log.warning("re-sending unacknowledged DLQ record %s:%s:%s", rej.origin.topic, rej.origin.partition,
                        rej.origin.offset)
            self.publish(rej, on_acked)

    def _send(self, rej: Rejection, on_acked: Callable[[], None]) -> None:
        value, headers = rej.value, dlq_headers(rej)
        limit = self.settings.max_message_bytes - HEADER_ROOM
        if value is not None and len(value) > limit:
            headers.append(("embedworker.value_truncated", str(len(value)).encode()))
            value = value[:limit]
        try:
            future = self._producer.send(self.topic, key=rej.origin.key, value=value, headers=headers)
        except MessageSizeTooLargeError as exc:
            log.error("DLQ record for %s:%s:%s too large: %s", rej.origin.topic, rej.origin.partition,
                      rej.origin.offset, exc)
            return
        except KafkaError as exc:
            log.warning("DLQ send failed, will retry: %s", exc)
            return

        def acked(_meta):
            self.published += 1
            on_acked()

        future.add_callback(acked)
        future.add_errback(lambda exc: log.warning("DLQ write failed, will retry: %s", exc))

    def flush(self, timeout_s: float = 30.0) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("DLQ flush: %s", exc)

    def close(self) -> None:
        if self._producer is not None:
            self.flush()
            self._producer.close(timeout=10)
            self._producer = None
