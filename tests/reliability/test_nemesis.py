"""Faults on the wire, every one once (the short schedule of bench/nemesis.py): a worker behind
Toxiproxy in front of a real Kafka and Redis, a feed of upserts and deletions throughout, and
Jepsen's kind of check at the end: nothing lost, nothing doubled, nothing stale.

Prints the per-fault table (pytest -s shows it)."""

import contextlib
import os
import shutil
import signal
import time

import pytest
import ray

from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import committed_offsets, create_topic, make_settings, wait_until
from tests.reliability.conftest import supervising, wait_all_committed
from tests.support.nemesis import NemesisServices, make_faults
from tests.support.nemesis_checker import Feeder, History, check_end_state, run_schedule

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


@pytest.fixture
def nemesis(tmp_path, request):
    """The services behind Toxiproxy; the lake on a small disk of its own, or on S3 for a test
    marked `@pytest.mark.parametrize("nemesis", ["s3"], indirect=True)`."""
    if not shutil.which("go"):
        pytest.skip("no go command here: Toxiproxy is built from its Go module")
    services = NemesisServices(tmp_path / "nemesis-run", lake=getattr(request, "param", "disk"))
    try:
        yield services.start()
    finally:
        services.stop()


def _schedule(nemesis, faults, tiny_model_dir, tmp_path, unique):
    """The faults in order against a worker with the product's defaults (but a 6 s session), the
    checks every round must pass; prints the table."""
    settings = make_settings(f"localhost:{nemesis.kafka_port}", f"redis://127.0.0.1:{nemesis.redis_port}/0",
                             tiny_model_dir, tmp_path, unique)
    worker_settings, checker = nemesis.settings_pair(settings)
    reports, end = run_schedule(faults, worker_settings, checker, index_name="tiny-bert", seed=1)
    print()
    for r in reports:
        print(f"{r.fault:24} {r.duration_s:5.1f} s  paused {r.paused_after_s}  recovery {r.recovery_s} s  "
              f"in-flight max {r.max_in_flight}  status ({r.status_s} s): {r.status[:100]}  log: {r.log[:100]}")
    print(end, nemesis.no_small_disk)
    assert end["worker_survived"]
    assert (end["lost"], end["doubled"], end["stale"], end["dlq"]) == (0, 0, 0, 0), end
    for r in reports:
        assert r.tracebacks == 0, f"{r.fault}: a traceback in the log"
        assert r.recovery_s is not None and r.recovery_s <= 5.0, r
        if r.service != "kafka" and "latency" not in r.fault and "slow close" not in r.fault:
            # a sink fault pauses the input within sink_stall_s of the first write it holds; that
            # write starts up to 2 s after the fault (the feed comes once a second, the lake writes
            # what is 0.5 s old)
            assert r.paused_after_s is not None and r.paused_after_s <= settings.workers.sink_stall_s + 2.0, r
        if "latency" not in r.fault and "slow close" not in r.fault:
            assert r.service in r.status.lower(), f"{r.fault}: status did not name the service: {r.status}"
    return reports


def test_every_fault_once_nothing_lost_doubled_or_stale(nemesis, tiny_model_dir, tmp_path, unique):
    _schedule(nemesis, list(make_faults(nemesis, scale=0.25).values()), tiny_model_dir, tmp_path, unique)


@pytest.mark.parametrize("nemesis", ["s3"], indirect=True)
def test_the_lake_on_s3_through_latency_an_outage_and_slow_closes(nemesis, tiny_model_dir, tmp_path, unique):
    faults = [f for f in make_faults(nemesis, scale=0.25).values() if f.service == "lake"]
    _schedule(nemesis, faults, tiny_model_dir, tmp_path, unique)


def _commits_moved_past(checker, marks: dict[int, int]) -> bool:
    committed = committed_offsets(checker)
    return bool(committed) and all(committed.get(p, -1) > mark for p, mark in marks.items())


@contextlib.contextmanager
def _two_replicas_fed(worker_settings, checker, seed: int):
    """Two replicas (Ray actors) on a topic of 4 partitions, 150 documents committed, then the
    checker's feed of upserts and deletions for the block; after it, the feed stops and the
    replicas drain. Yields (supervisor, history)."""
    create_topic(checker, partitions=4)
    history = History(checker, seed=seed)
    history.send(150)
    supervisor = StreamSupervisor(worker_settings)
    supervisor.start()
    feeder = None
    try:
        with supervising(supervisor):
            wait_until(lambda: sum(committed_offsets(checker).values()) >= 100, timeout=120, message="first commits")
            feeder = Feeder(history).start()
            yield supervisor, history
            feeder.stop()
            feeder = None
            wait_all_committed(checker, supervisor)
    finally:
        if feeder:
            feeder.stop()
        history.close()


def test_a_replica_frozen_past_the_session_timeout_then_thawed(ray_cluster, stream_settings):
    """SIGSTOP of a replica's process for longer than the session timeout while upserts and
    deletions flow: its partitions move to the other replica within the session timeout + 5 s;
    thawed, it finds itself fenced or rebalanced, and writes nothing twice and nothing stale."""
    settings = stream_settings(workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30})
    session_s = settings.kafka.session_timeout_ms / 1000
    with _two_replicas_fed(settings, settings, seed=3) as (supervisor, history):
        victim = ray.get(supervisor.actors[0].pid.remote(), timeout=30)
        marks = dict(wait_until(lambda: committed_offsets(settings), timeout=30, message="committed offsets"))
        os.kill(victim, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            wait_until(lambda: _commits_moved_past(settings, marks), timeout=session_s + 30, interval=0.2,
                       message="every partition committing again while one replica is frozen")
            moved_s = time.monotonic() - frozen_at
            time.sleep(max(0.0, session_s + 4 - moved_s))  # the fault: frozen past the session timeout in any case
        finally:
            os.kill(victim, signal.SIGCONT)
        thawed_marks = dict(committed_offsets(settings))
        wait_until(lambda: _commits_moved_past(settings, thawed_marks), timeout=60, interval=0.2,
                   message="every partition committing after the thaw")
    end = check_end_state(history, "tiny-bert")
    print(f"\nreplica frozen {session_s + 4:.0f} s: every partition committing again {moved_s:.1f} s after the "
          f"freeze (session timeout {session_s:.0f} s); end state {end}")
    assert (end["lost"], end["doubled"], end["stale"], end["dlq"]) == (0, 0, 0, 0), end
    assert moved_s <= session_s + 5.0


def test_replicas_killed_while_their_commits_are_slow(nemesis, ray_cluster, tiny_model_dir, tmp_path, unique):
    """Kafka answers 500 ms late (Toxiproxy), so a replica spends most of its time in a commit;
    kill -9 of a replica three times meanwhile: Ray restarts it, the history comes out whole."""
    settings = make_settings(f"localhost:{nemesis.kafka_port}", f"redis://127.0.0.1:{nemesis.redis_port}/0",
                             tiny_model_dir, tmp_path, unique,
                             workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30})
    worker_settings, checker = nemesis.settings_pair(settings)
    with _two_replicas_fed(worker_settings, checker, seed=4) as (supervisor, history):
        latency = nemesis.toxiproxy.add_toxic("kafka", "latency", latency=500)
        for kill in range(3):
            marks = dict(committed_offsets(checker))
            wait_until(lambda marks=marks: _commits_moved_past(checker, marks), timeout=90, interval=0.2,
                       message="commits before a kill")
            actor = supervisor.actors[kill % 2]
            os.kill(ray.get(actor.pid.remote(), timeout=30), signal.SIGKILL)
        nemesis.toxiproxy.remove_toxic("kafka", latency)
    end = check_end_state(history, "tiny-bert")
    print(f"\n3 kills -9 with commits 500 ms slow: {supervisor.restarts} restarts; end state {end}")
    assert supervisor.restarts >= 3
    assert (end["lost"], end["doubled"], end["stale"], end["dlq"]) == (0, 0, 0, 0), end
