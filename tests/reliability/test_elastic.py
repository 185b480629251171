"""Elastic replicas on a real local Ray: recovery by static membership, autoscaling with the
backlog, replicas removed while records are in flight or killed while they drain.
Every test ends with every document once in Redis and Parquet and the offsets committed."""

import os
import signal
import time

import pytest
import ray

from pipelines.ops.status import collect_status, group_members
from pipelines.stream.replica_status import actor_status
from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import all_committed
from tests.reliability.conftest import Stream, supervising, wait_all_committed, wait_until
from workers.kafka.clients import new_admin

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

FIXED = {"num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30}


def assignment(settings) -> dict[str, list[int]]:
    """Partitions per Kafka client id, as the group coordinator has them."""
    admin = new_admin(settings.kafka, "test")
    try:
        return {m["client_id"]: m["partitions"] for m in group_members(admin, settings.kafka.group_id,
                                                                       settings.kafka.topic)[1]}
    finally:
        admin.close()


def pid_or_none(actor):
    try:
        return ray.get(actor.pid.remote(), timeout=2)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None


def state_of(actor) -> str | None:
    try:
        return ray.get(actor.stats.remote(), timeout=2).get("state")
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return None


def consumed(actor) -> int:
    try:
        return ray.get(actor.stats.remote(), timeout=2).get("consumed", 0)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
        return 0


def wait_consuming(stream: Stream, actor, message: str) -> None:
    """Until `actor` has consumed something, records keep coming (20/s, leaving 200 to send)."""
    def consuming() -> bool:
        if stream.sent < len(stream.records) - 200:
            stream.send(2)
        return consumed(actor) > 0
    wait_until(consuming, timeout=60, interval=0.1, message=message)


def test_a_killed_replica_takes_its_partitions_back_within_5_s_of_being_set_up_again(ray_cluster, stream_settings,
                                                                                      redis_client):
    """Static membership: the restarted replica rejoins as the same group.instance.id and gets its
    partitions back without a rebalance; the other replica keeps its own throughout. Timed from
    the restarted replica's model being loaded (what static membership governs; the load itself
    took 2-6 s here, longer when the other half of the suite runs beside it)."""
    # the session outlasts a restart on a busy 2-core machine (the default, 30 s, does too)
    settings = stream_settings(workers={**FIXED, "replicas": 2}, kafka={"session_timeout_ms": 20000})
    stream = Stream(settings, 2400, n_bad=4, seed=21, partitions=6)
    stream.send(600)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    with supervising(supervisor):
        wait_until(lambda: stream.committed() > 300, timeout=90, message="progress before the kill")
        wait_until(lambda: sorted(map(len, assignment(settings).values())) == [3, 3], timeout=30,
                   message="both replicas in the group, 3 partitions each")
        before = assignment(settings)
        victim = supervisor.actors[0]
        old_pid = ray.get(victim.pid.remote(), timeout=30)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stream.send(600)
        wait_until(lambda: pid_or_none(victim) not in (None, old_pid), timeout=60, interval=0.05,
                   message="the actor restarted")
        restarted_at = time.monotonic()
        wait_until(lambda: state_of(victim) in ("connecting", "running"), timeout=60, interval=0.05,
                   message="the restarted replica's model loaded")
        set_up_at = time.monotonic()
        wait_consuming(stream, victim, "its partitions consumed again")
        back_at = time.monotonic()
        assert assignment(settings) == before, "the same partitions, no rebalance"
        stream.send()
        wait_all_committed(settings, supervisor)
    print(f"\nkill -9 of a replica: process back after {restarted_at - killed_at:.1f} s, its model loaded "
          f"{set_up_at - restarted_at:.1f} s after that, its partitions consumed again {back_at - set_up_at:.1f} s later")
    assert back_at - set_up_at < 5.0
    stream.check(redis_client)
    assert assignment(settings) == {}, "drained replicas left the group"


def test_autoscaling_a_backlog_goes_to_3_replicas_drains_then_back_to_1(ray_cluster, stream_settings, redis_client):
    """Replicas paced at 50 docs/s each (as a loaded GPU): a 2,400-document backlog on 6
    partitions (48 s of one replica), min 1 / max 3; the whole backlog, then idle."""
    from tests.support.workers import PacedWorker

    settings = stream_settings(workers={**FIXED, "max_in_flight": 512, "autoscale": {
        "enabled": True, "min_replicas": 1, "max_replicas": 3, "catch_up_s": 5, "scale_down_after_s": 8,
        "cooldown_s": 2, "interval_s": 1}}, batching={"max_wait_ms": 20})
    stream = Stream(settings, 2400, n_bad=6, seed=22, partitions=6)
    stream.send()  # the backlog, before the stream starts
    supervisor = StreamSupervisor(settings, worker_class=PacedWorker)
    supervisor.start()
    assert supervisor.running == 1
    peak = 0
    with supervising(supervisor):
        def grown() -> bool:
            nonlocal peak
            peak = max(peak, len(assignment(settings)))
            return peak == 3
        wait_until(grown, timeout=120, message="3 replicas consuming", interval=0.5,
                   diagnose=lambda: f"{supervisor.scaling.state()}, stats {supervisor.stats()}")
        scaled_up = actor_status(settings)["scaling"]
        wait_all_committed(settings, supervisor)
        wait_until(lambda: supervisor.running == 1 and not supervisor._draining, timeout=90,
                   message="back to 1 replica after the idle window",
                   diagnose=lambda: str(supervisor.scaling.state()))
        wait_until(lambda: len(assignment(settings)) == 1, timeout=30, message="removed replicas left the group")
        report = collect_status(settings, actors=True)
    assert scaled_up["desired"] == 3 and scaled_up["autoscale"]
    assert report["actors"]["scaling"]["running"] == 1 and report["actors"]["scaling"]["desired"] == 1
    assert report["problems"] == [], "a replica removed on purpose is not missing"
    assert "scaling 1 → 3" in supervisor.scaling.last_change or "→ 1" in supervisor.scaling.last_change
    samples = supervisor.scaling.metrics.registry.get_sample_value
    assert samples("embedworker_replica_changes_total", {"direction": "up", "cause": "backlog"}) >= 1
    assert samples("embedworker_replica_changes_total", {"direction": "down", "cause": "idle"}) >= 1
    stream.check(redis_client)


def test_replicas_removed_while_records_are_in_flight_or_killed_while_draining_lose_and_double_nothing(
        ray_cluster, stream_settings, redis_client):
    settings = stream_settings(workers={**FIXED, "replicas": 3})
    stream = Stream(settings, 3600, n_bad=6, seed=23, partitions=6)
    stream.send(1200)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    with supervising(supervisor):
        wait_until(lambda: stream.committed() > 300, timeout=90, message="progress with 3 replicas")
        stream.send(1200)
        supervisor.scale_to(2)                      # a drain while its partitions have records in flight
        wait_until(lambda: 2 not in supervisor.actors, timeout=60, message="the drained replica removed")
        supervisor.scale_to(3)                      # back to 3, then one killed -9 while it drains
        wait_until(lambda: 2 in supervisor.actors, timeout=10, message="the replica added")
        wait_consuming(stream, supervisor.actors[2], "the added replica consuming")
        stream.send()
        pid = ray.get(supervisor.actors[2].pid.remote(), timeout=30)
        supervisor.scale_to(2)
        wait_until(lambda: supervisor._draining, timeout=10, interval=0.01, message="the drain to begin")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: 2 not in supervisor.actors, timeout=60, message="the killed replica removed")
        wait_all_committed(settings, supervisor)
        assert sorted(supervisor.actors) == [0, 1]
        assert len(assignment(settings)) == 2, "the killed replica's membership was ended"
    stream.check(redis_client)


def test_a_second_run_with_the_same_instance_ids_fences_the_first_which_stops_in_words(stream_settings):
    """Two drivers on one group and one kafka.instance_prefix: the newer member takes the place;
    the older one's poll is fenced and it stops with a sentence naming the setting."""
    from tests.helpers import WorkerThread
    from workers.errors import SourceError

    settings = stream_settings()
    stream = Stream(settings, 200, n_bad=0, seed=24, partitions=3)
    stream.send()
    first = WorkerThread(settings).start()
    wait_until(lambda: first.worker.stats().get("consumed", 0) > 0, timeout=60, message="the first consuming")
    second = WorkerThread(settings).start()
    try:
        wait_until(lambda: not first.thread.is_alive(), timeout=60, message="the first to stop, fenced")
        assert isinstance(first.error, SourceError) and "kafka.instance_prefix" in str(first.error)
        wait_until(lambda: all_committed(settings), timeout=60, message="the second finishing the stream")
    finally:
        second.stop()
