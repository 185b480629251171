"""The one Redis retry policy (no services): `retries` more attempts for clients from connect(),
one attempt per sink write with the policy's backoff as the wait, credentials never retried."""

import socket
import threading
import time

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from tests.helpers import wait_until
from workers.errors import SinkBackpressureError, SinkError
from workers.settings import RedisSettings
from workers.sinks.redis_client import connect
from workers.sinks.redis_vset import RedisVectorSetSink


@pytest.fixture
def resetting_server():
    """A TCP server that accepts and closes every connection; counts the connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(50)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            accepted.append(time.monotonic())
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"redis://127.0.0.1:{srv.getsockname()[1]}/0", accepted
    srv.close()


def settings(url="redis://127.0.0.1:1/0", **kw) -> RedisSettings:
    return RedisSettings(url=url, retry_backoff_s=0.01, retry_backoff_max_s=0.04, socket_timeout_s=2, **kw)


def wait_for(condition, timeout=5.0):
    wait_until(condition, timeout, interval=0.01, message="the server to record the connections")


@pytest.mark.parametrize("retries", [0, 2])
def test_clients_make_retries_plus_one_attempts(resetting_server, retries):
    url, accepted = resetting_server
    with pytest.raises(ConnectionError):
        connect(settings(url, retries=retries), url).ping()
    wait_for(lambda: len(accepted) >= retries + 1)  # the server thread records what the finished client made
    assert len(accepted) == retries + 1, "one policy: no second loop stacked on it"


def test_a_sink_client_makes_one_attempt(resetting_server):
    url, accepted = resetting_server
    with pytest.raises(ConnectionError):
        connect(settings(url, retries=5), url, retry=False).ping()
    wait_for(lambda: len(accepted) >= 1)
    assert len(accepted) == 1


def test_setup_retries_then_reports_backpressure_naming_the_server(resetting_server):
    url, accepted = resetting_server
    sink = RedisVectorSetSink(settings(url, retries=2), "m", "org/m", 4)
    with pytest.raises(SinkBackpressureError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 is unavailable"):
        sink.setup()
    assert len(accepted) == 3


def test_a_write_attempt_fails_once_and_waits_the_policy_backoff():
    sink = RedisVectorSetSink(RedisSettings(url="redis://127.0.0.1:1/0", retries=3, retry_backoff_s=0.1,
                                            retry_backoff_max_s=0.5), "m", "org/m", 4)
    calls = []

    def refused():
        calls.append(1)
        raise ConnectionError("refused")

    waits = []
    for _ in range(4):
        with pytest.raises(SinkBackpressureError) as info:
            sink._call("redis://127.0.0.1:1/0", refused)
        waits.append(info.value.retry_after_s)
    assert len(calls) == 4, "one attempt per write: the sink stage retries, outside its lock"
    assert waits == pytest.approx([0.2, 0.4, 0.5, 0.5]), "retry_backoff_s doubled per failure, at most the max"
    assert sink._call("redis://127.0.0.1:1/0", lambda: "ok") == "ok"
    with pytest.raises(SinkBackpressureError) as info:
        sink._call("redis://127.0.0.1:1/0", refused)
    assert info.value.retry_after_s == waits[0], "a success resets the backoff"


def test_rejected_credentials_are_not_retried():
    sink = RedisVectorSetSink(settings(retries=3), "m", "org/m", 4)
    calls = []

    def rejected():
        calls.append(1)
        raise AuthenticationError("WRONGPASS invalid username-password pair")

    with pytest.raises(SinkError, match="rejected the credentials"):
        sink._call("redis://127.0.0.1:1/0", rejected, retry=True)
    assert len(calls) == 1
