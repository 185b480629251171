"""The autoscaler's decision: the formula, the bounds, the windows (no flapping)."""

import pytest

from pipelines.config import ConfigError, load_settings
from pipelines.stream.autoscaler import Observation, ReplicaAutoscaler
from workers.settings import AutoscaleSettings


class Topic:
    """A topic and a group of replicas, advanced second by second."""

    def __init__(self, partitions: int = 6, rate_per_replica: float = 40.0):
        self.partitions, self.rate = partitions, rate_per_replica
        self.end = self.committed = 0
        self.written: dict[int, int] = {}
        self.t = 0.0

    def step(self, seconds: float, produced_per_s: float, replicas: int) -> Observation:
        self.end += int(produced_per_s * seconds)
        capacity = int(self.rate * replicas * seconds)
        done = min(capacity, self.end - self.committed)
        self.committed += done
        self.t += seconds
        lag = self.end - self.committed
        stats = []
        for r in range(replicas):
            self.written[r] = self.written.get(r, 0) + done // replicas
            stats.append({"replica": r, "written": self.written[r], "lag": lag // replicas,
                          "encode_busy_s": self.written[r] / self.rate, "sink_busy_s": 0.0})  # seconds of work
        return Observation(self.t, self.end, lag, self.partitions, stats)


def run(scaler: ReplicaAutoscaler, topic: Topic, seconds: float, produced_per_s: float, replicas: int,
        interval: float = 5.0) -> tuple[int, list]:
    decisions = []
    for _ in range(int(seconds / interval)):
        decision = scaler.observe(topic.step(interval, produced_per_s, replicas), replicas)
        if decision is not None:
            decisions.append(decision)
            replicas = decision.replicas
    return replicas, decisions


def settings(**kw) -> AutoscaleSettings:
    base = dict(enabled=True, min_replicas=1, max_replicas=4, catch_up_s=60, scale_down_after_s=120, cooldown_s=30)
    return AutoscaleSettings(**{**base, **kw})


def test_a_backlog_scales_up_by_the_formula_and_the_log_line_says_why():
    topic = Topic(rate_per_replica=40)
    scaler = ReplicaAutoscaler(settings(cooldown_s=0), 0.0)
    run(scaler, topic, 10, produced_per_s=30, replicas=1)  # one replica keeps up: rate measured
    assert scaler.rate_per_replica == pytest.approx(40, rel=0.2)
    topic.end += 7200  # a burst: 7,200 records to catch up within 60 s at 40/s per replica -> 3 + input
    decision = scaler.observe(topic.step(5, 30, 1), 1)
    assert decision is not None and decision.replicas == 4
    assert str(decision).startswith("scaling 1 → 4: lag ")
    assert "docs/s per replica, catch-up 60 s" in str(decision)


def test_never_more_replicas_than_partitions_or_max_never_fewer_than_min():
    topic = Topic(partitions=2, rate_per_replica=10)
    scaler = ReplicaAutoscaler(settings(cooldown_s=0, max_replicas=8), 0.0)
    run(scaler, topic, 10, 5, 1)
    topic.end += 100_000
    assert scaler.observe(topic.step(5, 5, 1), 1).replicas == 2  # 2 partitions
    idle = ReplicaAutoscaler(settings(min_replicas=2, cooldown_s=0, scale_down_after_s=0), 0.0)
    replicas, _ = run(idle, Topic(), 30, 0, 3)
    assert replicas == 2


def test_scale_down_waits_for_the_window_and_only_goes_down_as_the_backlog_shrinks():
    topic = Topic(rate_per_replica=40)
    scaler = ReplicaAutoscaler(settings(), 0.0)
    run(scaler, topic, 10, 30, 1)
    topic.end += 20_000
    replicas, decisions = run(scaler, topic, 40, 30, 1)
    assert replicas == 4 and len(decisions) == 1
    # the backlog is gone in ~2 minutes; then 30/s needs 1 replica, but only after 120 s of wanting 1
    replicas, decisions = run(scaler, topic, 115, 30, replicas)
    assert replicas == 4, decisions
    replicas, decisions = run(scaler, topic, 300, 30, replicas)
    steps = [d.replicas for d in decisions]
    assert replicas == 1 and steps == sorted(steps, reverse=True), steps  # only down, as the backlog shrinks
    assert all(d.cause == "backlog" for d in decisions)


def test_a_bursty_input_within_the_windows_does_not_oscillate():
    topic = Topic(rate_per_replica=40)
    scaler = ReplicaAutoscaler(settings(), 0.0)
    replicas, changes = 1, []
    for cycle in range(12):  # 20 min: a 30 s burst of 150/s every 100 s, 10/s between
        replicas, d1 = run(scaler, topic, 30, 150, replicas)
        replicas, d2 = run(scaler, topic, 70, 10, replicas)
        changes += [(cycle, d) for d in d1 + d2]
    # up for the first burst, settled at what the bursts need within a few minutes, then no change at all
    assert all(cycle < 4 for cycle, _ in changes), [(c, str(d)) for c, d in changes]
    assert len(changes) <= 2 and replicas >= 2


def test_idle_goes_to_min_and_nothing_measured_yet_keeps_the_count():
    scaler = ReplicaAutoscaler(settings(cooldown_s=0, scale_down_after_s=0), 0.0)
    assert scaler.observe(Observation(5, 1000, 1000, 6, [{"replica": 0, "state": "loading model"}]), 2) is None
    assert scaler.observe(Observation(10, 1000, 0, 6, []), 2).replicas == 1


def test_min_above_max_is_a_config_error_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workers:\n  autoscale: {enabled: true, min_replicas: 3, max_replicas: 2}\n")
    with pytest.raises(ConfigError, match="workers.autoscale"):
        load_settings(path)


def test_a_backlog_at_the_start_is_answered_as_soon_as_a_rate_is_measured():
    """Before, the first scale-up waited for cooldown_s (30 s) after the start, on top of the
    replica's first writes (which took minutes with a backlog held in flight)."""
    scaler = ReplicaAutoscaler(settings(), 0.0)  # cooldown_s 30
    busy = {"replica": 0, "written": 0, "encode_busy_s": 0.0, "sink_busy_s": 0.0}
    assert scaler.observe(Observation(5, 3000, 3000, 6, [busy]), 1) is None  # no rate yet
    wrote = {"replica": 0, "written": 95, "encode_busy_s": 5.0, "sink_busy_s": 0.5}
    decision = scaler.observe(Observation(10, 3000, 2905, 6, [wrote]), 1)
    assert decision is not None and decision.replicas == 3 and decision.cause == "backlog"
