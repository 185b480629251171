"""Every Kafka client of the project is built here, from `KafkaSettings`: brokers, security,
client id, request timeout and message size are set in one place, so a setting is honoured by
the worker, the DLQ, `produce`, `status`, replays, the demo and eval alike. Also the one
place that turns a kafka-python error into a sentence (`kafka_error_message`).
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import AuthorizationError, KafkaTimeoutError, SaslAuthenticationFailedError

from workers.settings import KafkaSettings

# Errors no retry fixes: the worker stops with the reason.
FATAL_KAFKA_ERRORS = (AuthorizationError, SaslAuthenticationFailedError)


def common_options(settings: KafkaSettings, role: str) -> dict[str, Any]:
    """What every client gets: the brokers, `{client_id}-{role}`, the timeouts and security
    (secrets resolved now, at connection time)."""
    return {"bootstrap_servers": settings.bootstrap_servers.split(","), "client_id": f"{settings.client_id}-{role}",
            "request_timeout_ms": settings.request_timeout_ms, "reconnect_backoff_max_ms": settings.reconnect_backoff_max_ms,
            "bootstrap_timeout_ms": min(settings.request_timeout_ms, 15000), **settings.security.client_options()}


def new_consumer(settings: KafkaSettings, role: str, *topics: str, **options: Any) -> KafkaConsumer:
    """A consumer that commits only when asked (`enable_auto_commit` False) and takes
    messages up to `max_message_bytes`."""
    config = common_options(settings, role)
    config.update(enable_auto_commit=False, max_partition_fetch_bytes=settings.max_message_bytes,
                  fetch_max_bytes=max(52_428_800, settings.max_message_bytes),
                  receive_message_max_bytes=max(104_857_600, 2 * settings.max_message_bytes))
    config.update(options)
    return KafkaConsumer(*topics, **config)


def new_producer(settings: KafkaSettings, role: str, **options: Any) -> KafkaProducer:
    """A producer acknowledged by every in-sync replica (`acks=all`), up to `max_message_bytes`."""
    config = common_options(settings, role)
    config.update(acks="all", linger_ms=5, max_request_size=settings.max_message_bytes)
    config.update(options)
    return KafkaProducer(**config)


def new_admin(settings: KafkaSettings, role: str, **options: Any) -> KafkaAdminClient:
    config = common_options(settings, role)
    config.update(options)
    return KafkaAdminClient(**config)


def kafka_error_message(exc: Exception, settings: KafkaSettings) -> str:
    """A sentence that names the problem and the settings to check (never the password)."""
    name = type(exc).__name__
    sec = settings.security
    hint = ""
    if isinstance(exc, SaslAuthenticationFailedError) or "SASL" in str(exc).upper():
        hint = (f" (SASL {sec.sasl_mechanism} as user {sec.sasl_username!r} was rejected: check "
                "kafka.security.sasl_username and sasl_password / sasl_password_file)")
    elif isinstance(exc, AuthorizationError):
        hint = " (the principal lacks an ACL for this topic or group)"
    elif isinstance(exc, KafkaTimeoutError) and "bootstrap" in str(exc).lower():
        hint = f" (no broker answered at {settings.bootstrap_servers} with protocol {sec.protocol}"
        if sec.protocol.startswith("SASL"):
            hint += (f"; brokers close the connection when SASL {sec.sasl_mechanism} authentication fails: check "
                     f"that user {sec.sasl_username!r} and its password (kafka.security.sasl_password or "
                     "sasl_password_file) are right")
        hint += "; check kafka.bootstrap_servers and kafka.security)"
    text = str(exc)  # kafka-python's errors already begin with their class name
    return f"Kafka: {text if text.startswith(name) else f'{name}: {text}'}{hint}"
