"""KafkaSource's poll errors by type, with a fake consumer (no Kafka): authorization and
authentication stop the worker, anything else backs off, is counted and logged once."""

import logging

import pytest
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from workers.errors import SourceError
from workers.kafka.source import KafkaSource
from workers.settings import KafkaSettings


class FakeConsumer:
    def __init__(self, errors):
        self.errors, self.polls = list(errors), 0

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {}


def source(errors, kinds=None) -> tuple[KafkaSource, FakeConsumer]:
    src = KafkaSource(KafkaSettings(topic="news"), replica=0, on_error=(kinds if kinds is not None else []).append)
    src._consumer = FakeConsumer(errors)  # what setup() opens
    return src, src._consumer


@pytest.mark.parametrize("error", [TopicAuthorizationFailedError("news"), GroupAuthorizationFailedError("g"),
                                   SaslAuthenticationFailedError("bad password")])
def test_authorization_and_authentication_stop_the_worker(error):
    src, _ = source([error])
    with pytest.raises(SourceError, match=type(error).__name__):
        src.poll(10)


def test_other_errors_back_off_are_counted_and_logged_once(caplog, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("workers.kafka.source.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("workers.kafka.source.time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    kinds = []
    src, consumer = source([UnknownTopicOrPartitionError("news")] * 5 + [KafkaConnectionError("gone")], kinds)
    with caplog.at_level(logging.WARNING, logger="embedworker.kafka"):
        while consumer.errors or consumer.polls < 7:  # the worker's loop: 50 ms polls
            assert src.poll(50) == []
    assert kinds == ["UnknownTopicOrPartitionError"] * 5 + ["KafkaConnectionError"]
    assert clock[0] - 1000.0 == pytest.approx(0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2), \
        "7 polls in 6.3 s: backing off (doubling from 0.1 s), not polling every 50 ms"
    warnings = [r.message for r in caplog.records if "poll failed" in r.message]
    assert len(warnings) == 2, "once per kind of error within a minute"
    assert src.last_error is None, "a poll that works clears the error"


def test_the_error_in_progress_is_reported():
    src, _ = source([UnknownTopicOrPartitionError("news")])
    src.poll(10)
    assert "UnknownTopicOrPartitionError" in src.last_error


class RebalancingConsumer:
    """A consumer whose poll runs a rebalance: the listener's callbacks, then (as kafka-python
    does when a callback raised) a KafkaError out of poll()."""

    def __init__(self, listener_of, assigned):
        self.listener_of, self.assigned, self.paused_now = listener_of, assigned, []

    def poll(self, timeout_ms=0, max_records=None):
        try:
            self.listener_of().on_partitions_assigned(self.assigned)
        except Exception as exc:  # noqa: BLE001
            raise KafkaConnectionError(f"rebalance failed: {exc}") from exc
        return {}

    def pause(self, *tps):
        self.paused_now += tps

    def assignment(self):
        return set(self.assigned)


def listening_source(on_assigned):
    from kafka import TopicPartition

    from workers.kafka.source import _Listener

    src = KafkaSource(KafkaSettings(topic="news"), replica=0)
    consumer = RebalancingConsumer(lambda: src._listener, [TopicPartition("news", 3)])
    src._consumer = consumer
    src._listener = _Listener(src, on_assigned, lambda tps, clean: None)
    return src, consumer


def test_a_failed_rebalance_handler_is_the_replicas_failure_not_an_outage():
    """Before, the KafkaError poll() raised after a handler failed read as a passing outage: the
    source backed off and polled on with the replica's partitions half set up."""
    from workers.errors import ReplicaError

    def broken(partitions):
        raise KeyError("half applied")

    src, _ = listening_source(broken)
    with pytest.raises(ReplicaError, match="handling assigned partitions failed \\(KeyError"):
        src.poll(10)


def test_partitions_assigned_while_paused_are_paused_before_any_fetch():
    """Before, pause() paused the partitions held then; one assigned later (a rebalance during a
    sink outage) was fetched, past the in-flight bound."""
    got = []
    src, consumer = listening_source(got.extend)
    src._paused = True
    src.poll(10)
    assert consumer.paused_now == consumer.assigned and got == [("news", 3)]
