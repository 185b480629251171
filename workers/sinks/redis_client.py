"""Redis connections, shared by the sink, search, status, backfill and the demo: one retry
policy, credentials and TLS from RedisSettings, one-line explanations of failures that retrying
will not fix, and the raw pipelined writer the sink uses for its VADDs.

Retries: one policy, `retry_policy(settings)` (`redis.retries` more attempts after a connection
error or timeout, `retry_backoff_s` doubling up to `retry_backoff_max_s`). Every client from
`connect()` gets it, except the sink's write clients (`retry=False`): the sink stage retries
their writes itself, waiting out `retry_backoff()` without holding its lock.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from workers.errors import SinkError
from workers.logs import register_secret
from workers.secrets import read_secret, redact_url
from workers.settings import RedisSettings

TRANSIENT = (ConnectionError, TimeoutError, BusyLoadingError, ReadOnlyError, OSError)
# Redis Cluster replies while slots move (a failover, a resharding): learn the map again, retry.
CLUSTER_REDIRECTS = (AskError, ClusterDownError, MovedError, TryAgainError)


def retry_backoff(settings: RedisSettings) -> ExponentialBackoff:
    """The policy's waits: `retry_backoff_s` doubled per failure, at most `retry_backoff_max_s`."""
    return ExponentialBackoff(cap=settings.retry_backoff_max_s, base=settings.retry_backoff_s)


def retry_policy(settings: RedisSettings) -> Retry:
    """The one Redis retry policy: `retries` more attempts after a transient error, waiting
    `retry_backoff(settings)` between them."""
    return Retry(retry_backoff(settings), settings.retries, supported_errors=TRANSIENT)


def connect(settings: RedisSettings, url: str, retry: bool = True):
    """A client for `url` with the configured credentials, TLS and retry policy (`retry=False`:
    one attempt per command, for callers that retry themselves); raises nothing until used."""
    kwargs: dict[str, Any] = {"socket_timeout": settings.socket_timeout_s,
                              "socket_connect_timeout": settings.socket_timeout_s,
                              "retry": retry_policy(settings) if retry else Retry(NoBackoff(), 0)}
    password = read_secret(settings.password, settings.password_file, "redis.password_file")
    in_url = urlsplit(url).password  # a password written into redis.url is masked in logs too
    if in_url:
        register_secret(in_url)
        register_secret(unquote(in_url))
    if settings.username:
        kwargs["username"] = settings.username
    if password is not None:
        kwargs["password"] = password
    if url.startswith("rediss://"):
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if getattr(settings, name) is not None:
                kwargs[name] = str(getattr(settings, name))
    if settings.cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def check_reachable(settings: RedisSettings) -> None:
    """Ping every configured server under the retry policy (drivers call this before they start
    work that would otherwise wait on Redis); SinkError naming the first that does not answer."""
    for url in dict.fromkeys(settings.shard_urls or [settings.url]):
        try:
            connect(settings, url).ping()
        except redis.RedisError as exc:
            raise (explain_redis_error(exc, url, settings)
                   or SinkError(f"Redis at {redact_url(url)} does not answer ({exc}); check redis.url / "
                                "redis.shard_urls and that the server runs")) from None


# What the sink runs (its fenced writes are scripts, which run the commands in them as the user;
# ZADD, ZREM and ZRANGE only with redis.retention).
SINK_COMMANDS = ("EVALSHA, SCRIPT LOAD, VADD, VREM, VGETATTR, VCARD, VDIM, VSIM, HGET, HSET, HPEXPIRE, HGETALL "
                 "(and ZADD, ZREM, ZRANGE with redis.retention)")


def explain_redis_error(exc: Exception, url: str, settings: RedisSettings) -> SinkError | None:
    """A SinkError naming the problem for failures that retrying will not fix, else None."""
    who = f"user {settings.username!r}" if settings.username else "the default user"
    where = redact_url(url)
    if isinstance(exc, AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        return SinkError(f"Redis at {where} rejected the credentials of {who} ({exc}); check redis.username and "
                         "redis.password / redis.password_file")
    if isinstance(exc, NoPermissionError) or "NOPERM" in str(exc) or "ACL failure" in str(exc):  # the last: in a script
        return SinkError(f"Redis at {where}: {who} lacks a permission the sink needs ({exc}); it needs {SINK_COMMANDS} "
                         "on keys under redis.key_prefix")
    return None



def resp(args: tuple) -> bytes:
    """One command in the Redis protocol (RESP): what redis-py's packer makes, without its
    per-argument Python overhead (the sink sends thousands of VADDs per second)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        elif isinstance(arg, float):
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def send_pipelined(client: redis.Redis, commands: list[tuple]) -> list:
    """Send `commands` in one write on one pooled connection (a pipeline without MULTI) and
    return one reply or ResponseError per command. Connection errors propagate after the
    connection is dropped (the caller retries the whole batch: VADD and VREM are idempotent)."""
    if not commands:
        return []
    pool = client.connection_pool
    conn = pool.get_connection()
    try:
        conn.send_packed_command([b"".join(resp(c) for c in commands)])
        replies = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)
