"""The status health rules (pure): each problem is named, a healthy report has none."""

import threading
import time

from pipelines.ops.status import DLQ_STUCK_S, answered_within, health


def report(**parts):
    base = {"kafka": {"members": [{"client_id": "embedworker-0"}, {"client_id": "embedworker-1"}],
                      "group": "g", "group_state": "Stable", "total_lag": 0},
            "redis": {"total_vectors": 10}, "parquet": {"rows": 10},
            "actors": {"actors": [{"replica": 0, "up": True}, {"replica": 1, "up": True}]}}
    base.update(parts)
    return base


def test_a_healthy_pipeline_has_no_problems():
    assert health(report(), replicas=2) == []


def test_an_unreachable_service_is_named():
    problems = health(report(kafka={"error": "Kafka: no broker answered"}, redis={"error": "Redis at x: refused"}), 2)
    assert problems == ["Kafka: no broker answered", "Redis at x: refused"]


def test_lag_that_grew_and_missing_members():
    kafka = {"members": [{"client_id": "embedworker-0"}], "group": "g", "group_state": "Stable", "lag_growth": 40,
             "lag_before": 10, "total_lag": 50, "window_s": 5, "produced_per_s": 9.0, "committed_per_s": 1.0}
    problems = health(report(kafka=kafka), replicas=2)
    assert problems[0].startswith("lag grew from 10 to 50 in 5 s")
    assert problems[1] == "1 of 2 replica(s) in consumer group g (Stable)"


def test_a_replica_down_is_named_and_nothing_else_is_asked_of_it():
    actors = {"actors": [{"replica": 0, "up": True}, {"replica": 1, "up": False, "state": "unavailable (ActorDiedError)",
                                                      "dlq_unacked": 5, "dlq_unacked_s": 999}]}
    assert health(report(actors=actors), 2) == ["replica 1 is unavailable (ActorDiedError)"]


def test_rejections_the_dlq_does_not_take_are_a_problem_after_one_resend_period():
    young = {"replica": 0, "up": True, "dlq_unacked": 3, "dlq_unacked_s": DLQ_STUCK_S - 1, "dlq_error": "timeout"}
    old = dict(young, dlq_unacked_s=DLQ_STUCK_S + 5, dlq_error="MessageSizeTooLargeError: too large")
    assert health(report(actors={"actors": [young]}), 1) == []
    (problem,) = health(report(actors={"actors": [old]}), 1)
    assert problem.startswith("replica 0: 3 rejected record(s) not taken by the DLQ topic for 35 s")
    assert problem.endswith("MessageSizeTooLargeError: too large")


def test_failing_polls_are_a_problem():
    actor = {"replica": 0, "up": True, "source_error": "Kafka: UnknownTopicOrPartitionError: news"}
    assert health(report(actors={"actors": [actor]}), 1) == [
        "replica 0: polling fails: Kafka: UnknownTopicOrPartitionError: news"]


def test_failing_or_stalled_sink_writes_are_a_problem():
    failing = {"replica": 0, "up": True, "paused": True, "sink_error": "Redis at redis://r:6379/0 is unavailable: refused"}
    stalled = {"replica": 1, "up": True, "paused": True, "sink_error": None, "stalled_s": 3.4, "stalled_sink": "redis"}
    busy = {"replica": 2, "up": True, "sink_error": None, "stalled_s": 0.2}
    assert health(report(actors={"actors": [failing, stalled, busy]}), 2) == [
        "replica 0: writes fail, input paused until they succeed: Redis at redis://r:6379/0 is unavailable: refused",
        "replica 1: a write to redis has not returned for 3 s (input paused; the service neither answers nor fails)"]


def test_a_read_that_hangs_is_reported_not_waited_for():
    release = threading.Event()
    started = time.monotonic()
    answers = answered_within(0.3, {"parquet": ("lake at s3://b/lake", lambda: release.wait(30) and {"rows": 1}),
                                    "lexical": ("the lexical index", lambda: {"documents": 2})})
    assert time.monotonic() - started < 5
    assert answers == {"parquet": {"error": "lake at s3://b/lake: no answer within 0.3 s (the store is slow or "
                                            "unreachable)"},
                       "lexical": {"documents": 2}}
    release.set()
