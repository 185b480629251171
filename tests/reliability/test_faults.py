"""Faults during a stream: nothing lost, nothing written twice, the DLQ complete, everything committed.

Each test prints how long recovery took (pytest -s shows it)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import ray
import redis
import yaml

from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import WorkerThread, all_committed, committed_offsets, header, produce, read_dlq, read_parquet
from tests.hostile import bad_records, tricky_valid_records
from tests.reliability.conftest import (
    REPO,
    Stream,
    run_in_thread,
    service,
    supervising,
    wait_all_committed,
    wait_until,
)
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def test_actor_killed_three_times_ray_restarts_it(ray_cluster, stream_settings, redis_client):
    settings = stream_settings(workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30})
    stream = Stream(settings, 3000, seed=1)
    stream.send(600)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    recoveries = []

    def serving(actor, old_pid) -> bool:
        try:
            return ray.get(actor.ready.remote(), timeout=5) and ray.get(actor.pid.remote(), timeout=5) != old_pid
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            return False

    with supervising(supervisor):
        for kill in range(3):
            wait_until(lambda kill=kill: stream.committed() > 100 * (kill + 1), timeout=90, message="progress before a kill")
            victim = supervisor.actors[kill % 2]
            pid = ray.get(victim.pid.remote(), timeout=30)
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            stream.send(800)
            wait_until(lambda victim=victim, pid=pid: serving(victim, pid), timeout=120, message="the restarted actor to serve again")
            recoveries.append(round(time.monotonic() - killed_at, 1))
        stream.send()
        wait_all_committed(settings, supervisor)
    print(f"\nactor kill -9 x3: back in service after {recoveries} s")
    stream.check(redis_client)


def test_a_replica_killed_while_it_loads_the_model_is_set_up_again(ray_cluster, stream_settings, redis_client):
    """kill -9 of a replica's process during setup(): Ray restarts it, the supervisor sets it up
    again and the stream starts; every document once, lag 0."""
    from tests.support.workers import SlowSetupWorker

    settings = stream_settings(workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5, "drain_timeout_s": 30})
    stream = Stream(settings, 500, seed=6)
    stream.send()
    supervisor = StreamSupervisor(settings, worker_class=SlowSetupWorker)
    starting, started = run_in_thread(supervisor.start)
    wait_until(lambda: len(supervisor.actors) == 2, timeout=60, message="the replicas to be created")
    os.kill(ray.get(supervisor.actors[0].pid.remote(), timeout=30), signal.SIGKILL)  # mid setup (8 s)
    starting.join(240)
    assert "error" not in started, started.get("error")
    assert supervisor.restarts >= 1
    with supervising(supervisor):
        wait_all_committed(settings, supervisor)
    stream.check(redis_client)


@pytest.mark.parametrize("delay_s", [0.3, 2.0, 6.0])
def test_sigterm_at_any_moment_of_the_start_exits_0(stream_settings, tmp_path, delay_s):
    """While the driver imports, starts Ray or sets up its replicas: a SIGTERM is a clean stop."""
    settings = stream_settings(workers={"replicas": 1, "num_gpus": 0, "num_cpus": 1})
    config = tmp_path / "run.yaml"
    _write_config(settings, config, ray={"num_cpus": 2})
    Stream(settings, 20, n_bad=0, seed=7).send()
    with open(tmp_path / "driver.log", "w") as log, _running_driver(config, log) as driver:
        time.sleep(delay_s)
        code = _stop_driver(driver)
    assert code == 0, (tmp_path / "driver.log").read_text()[-3000:]


def _write_config(settings, path, **extra) -> None:
    data = settings.model_dump(mode="json")
    for section, values in extra.items():
        data[section] = {**data.get(section, {}), **values}
    path.write_text(yaml.safe_dump(data))


@contextlib.contextmanager
def _running_driver(config, log):
    """`embedworker run` in its own process group; leaving the block kills the group (the driver
    and the local Ray cluster it started) with SIGKILL if it is still running."""
    env = {**os.environ, "EMBEDWORKER_LOG_LEVEL": "INFO"}
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.cli.main", "run", "-c", str(config)], env=env,
                              start_new_session=True, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()


def _stop_driver(driver, timeout: float = 120) -> int:
    """SIGTERM: the driver drains its replicas and exits; returns its exit code."""
    driver.send_signal(signal.SIGTERM)
    return driver.wait(timeout)


def test_driver_killed_mid_stream_then_run_again(stream_settings, redis_client, tmp_path):
    settings = stream_settings(workers={"replicas": 1, "num_gpus": 0, "num_cpus": 1})
    config = tmp_path / "run.yaml"
    _write_config(settings, config, ray={"num_cpus": 2})
    stream = Stream(settings, 3000, seed=2)
    stream.send(1500)
    with open(tmp_path / "driver1.log", "w") as log, _running_driver(config, log):
        wait_until(lambda: stream.committed() > 300, timeout=120, message="progress before the kill")
        # leaving the block: kill -9 of the driver and of the local Ray cluster it started
    stream.send()
    restarted = time.monotonic()
    with open(tmp_path / "driver2.log", "w") as log, _running_driver(config, log) as driver:
        wait_until(lambda: all_committed(settings), timeout=180, message="everything committed after restart")
        recovery = time.monotonic() - restarted
        code = _stop_driver(driver)
    assert code == 0, (tmp_path / "driver2.log").read_text()[-3000:]
    print(f"\ndriver kill -9: restarted driver caught up in {recovery:.1f} s (Ray start and model load included)")
    stream.check(redis_client)


@pytest.fixture
def private_redis(tmp_path):
    port = 16391
    run_dir = tmp_path / "redis-run"
    service("redis.sh", "start", run_dir, REDIS_PORT=port, REDIS_PERSIST=1)
    yield port, run_dir
    service("redis.sh", "stop", run_dir, REDIS_PORT=port)


def sink_errors(worker, sink: str) -> float:
    """Failed write attempts of one sink so far (each one is retried): the event a test of an
    outage waits for, instead of a fixed sleep."""
    return worker.worker.metrics.registry.get_sample_value(
        "embedworker_sink_errors_total", {"replica": "0", "sink": sink}) or 0.0


def test_redis_down_retries_paused_then_catches_up(stream_settings, private_redis):
    port, run_dir = private_redis
    settings = stream_settings(redis={"url": f"redis://127.0.0.1:{port}/0", "retries": 1})
    client = redis.Redis(port=port)
    stream = Stream(settings, 3000, seed=3)
    stream.send(1500)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: stream.committed() > 300, timeout=60, message="progress before the outage")
        service("redis.sh", "stop", run_dir, REDIS_PORT=port)
        stream.send()
        wait_until(lambda: worker.worker.stats()["paused"] and "Redis" in (worker.worker.stats()["sink_error"] or ""),
                   timeout=15, message="paused with the Redis error")
        during, failed = committed_offsets(settings), sink_errors(worker, "redis")
        # the outage: three more failed attempts (retried under the backoff), and nothing committed
        wait_until(lambda: sink_errors(worker, "redis") >= failed + 3, timeout=30, message="three retries")
        assert committed_offsets(settings) == during, "nothing committed while records could not be written"
        assert worker.thread.is_alive() and worker.error is None
        service("redis.sh", "start", run_dir, REDIS_PORT=port, REDIS_PERSIST=1)
        back = time.monotonic()
        wait_until(lambda: all_committed(settings), timeout=120, message="catch-up after Redis came back")
        print(f"\nRedis down 15 s: caught up {time.monotonic() - back:.1f} s after it came back")
    finally:
        worker.stop()
    stream.check(client)


def test_redis_hangs_the_input_pauses_within_seconds(stream_settings, private_redis):
    """redis-server stopped with SIGSTOP: replies never come, no error is raised for a while;
    the sink write counts as stalled after workers.sink_stall_s and the input pauses at once."""
    port, run_dir = private_redis
    # The in-flight bound made larger than the stream (60 s of the encode rate): the pause can
    # only come from the stalled write. (With the default 2 s, a machine slowed by other work
    # measures a low rate and the bound, legitimately, pauses the input first.)
    settings = stream_settings(redis={"url": f"redis://127.0.0.1:{port}/0"},
                               workers={"sink_stall_s": 1.0, "max_in_flight_s": 60.0})
    client = redis.Redis(port=port)
    pid = int((run_dir / f"redis-{port}" / "redis.pid").read_text().strip())
    stream = Stream(settings, 2000, seed=5)
    stream.send(600)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: stream.committed() > 200, timeout=60, message="progress before the hang")
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            stream.send()
            wait_until(lambda: worker.worker.stats()["paused"], timeout=15, message="paused while Redis hangs")
            paused_after = time.monotonic() - stopped_at
            stats = worker.worker.stats()
            assert paused_after < 6.0 and stats["stalled_s"] >= 1.0, (paused_after, stats)
            consumed = stats["consumed"]
            time.sleep(2)  # a window in which nothing more may be read
            assert worker.worker.stats()["consumed"] - consumed <= settings.kafka.max_poll_records, \
                "the worker kept reading while paused"
            print(f"\nRedis hung: input paused {paused_after:.1f} s after SIGSTOP")
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: all_committed(settings), timeout=120, message="catch-up after Redis resumed")
    finally:
        worker.stop()
    stream.check(client)


@pytest.fixture
def private_kafka(tmp_path):
    port = 19192
    run_dir = tmp_path / "kafka-run"
    service("kafka.sh", "start", run_dir, KAFKA_PORT=port)
    yield f"localhost:{port}", run_dir
    service("kafka.sh", "stop", run_dir, KAFKA_PORT=port)


def test_kafka_broker_restarted_mid_stream(stream_settings, redis_client, private_kafka):
    bootstrap, run_dir = private_kafka
    settings = stream_settings(kafka={"bootstrap_servers": bootstrap})
    stream = Stream(settings, 3000, seed=4)
    stream.send(1500)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: stream.committed() > 300, timeout=90, message="progress before the restart")
        t0 = time.monotonic()
        service("kafka.sh", "restart", run_dir, KAFKA_PORT=19192)
        restarted = time.monotonic()
        stream.send()
        wait_until(lambda: all_committed(settings), timeout=180, message="catch-up after the broker restart")
        print(f"\nKafka restart: broker down {restarted - t0:.1f} s; caught up {time.monotonic() - restarted:.1f} s later")
        assert worker.thread.is_alive() and worker.error is None
    finally:
        worker.stop()
    stream.check(redis_client)


def test_parquet_folder_unwritable_then_writable_again(stream_settings, redis_client, tmp_path):
    settings = stream_settings(parquet={"path": str(tmp_path / "vectors"), "max_seconds": 0.5})
    stream = Stream(settings, 3000, seed=5)
    stream.send(1500)
    worker = WorkerThread(settings).start()
    root, aside = tmp_path / "vectors", tmp_path / "vectors-aside"
    try:
        wait_until(lambda: stream.committed() > 300, timeout=60, message="progress before the fault")
        root.rename(aside)
        root.write_text("not a folder")  # every write under it now fails, even for root
        stream.send()
        wait_until(lambda: worker.worker.stats()["paused"]
                   and "the lake at" in (worker.worker.stats()["sink_error"] or ""),
                   timeout=15, message="paused with the lake's error",
                   diagnose=lambda: f"stats {worker.worker.stats()}")
        during, failed = committed_offsets(settings), sink_errors(worker, "parquet")
        wait_until(lambda: sink_errors(worker, "parquet") >= failed + 2, timeout=30, message="two retries")
        assert committed_offsets(settings) == during
        root.unlink()
        aside.rename(root)
        back = time.monotonic()
        wait_until(lambda: all_committed(settings), timeout=120, message="catch-up after the folder came back")
        print(f"\nParquet unwritable: caught up {time.monotonic() - back:.1f} s after it was writable again")
    finally:
        if aside.exists():
            if root.is_file():
                root.unlink()
            aside.rename(root)
        worker.stop()
    stream.check(redis_client)


def test_sigterm_during_a_burst_drains_and_exits_0(stream_settings, redis_client, tmp_path):
    settings = stream_settings(workers={"replicas": 1, "num_gpus": 0, "num_cpus": 1})
    config = tmp_path / "run.yaml"
    _write_config(settings, config, ray={"num_cpus": 2})
    stream = Stream(settings, 3000, seed=6)
    with open(tmp_path / "driver.log", "w") as log, _running_driver(config, log) as driver:
        wait_until(lambda: "started 1 replica" in (tmp_path / "driver.log").read_text(), timeout=120,
                   message="the worker to start")
        stream.send()  # the burst
        wait_until(lambda: stream.committed() > 0, timeout=60, message="the burst to reach the worker")
        t0 = time.monotonic()
        code = _stop_driver(driver)
    assert code == 0, (tmp_path / "driver.log").read_text()[-3000:]
    assert "SIGTERM received" not in (tmp_path / "driver.log").read_text(), "Ray's native stack before the stop"
    print(f"\nSIGTERM: drained, flushed, committed and exited in {time.monotonic() - t0:.1f} s")
    committed = committed_offsets(settings)
    table = read_parquet(settings)
    held = {}
    for p, o in zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()):
        held.setdefault(p, set()).add(o)
    bad_offsets = {}
    for r in read_dlq(settings, expected=len(stream.bad)):
        bad_offsets.setdefault(int(header(r, "embedworker.source.partition")), set()).add(
            int(header(r, "embedworker.source.offset")))
    for p, upto in committed.items():
        missing = set(range(upto)) - held.get(p, set()) - bad_offsets.get(p, set())
        assert not missing, f"partition {p}: committed past records not written: {sorted(missing)[:5]}"
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=120, message="the rest after the restart")
    finally:
        worker.stop()
    stream.check(redis_client)


def test_a_second_worker_joins_then_leaves_mid_stream(stream_settings, redis_client):
    settings = stream_settings()
    stream = Stream(settings, 3000, seed=7)
    stream.send(1000)
    first = WorkerThread(settings, replica=0).start()
    try:
        wait_until(lambda: stream.committed() > 200, timeout=60, message="progress with one worker")
        second = WorkerThread(settings, replica=1).start()
        # Only records sent after the handover are sure to reach the second worker: the first
        # may finish a partition's backlog before it gives the partition up.
        wait_until(lambda: second.worker.ready() and bool(second.worker.sink_stage.owned), timeout=60,
                   message="partitions for the second worker")
        stream.send(1000)
        wait_until(lambda: second.worker.stats().get("consumed", 0) > 0, timeout=60, message="the second worker to work")
        second.stop()
        stream.send()
        wait_until(lambda: all_committed(settings), timeout=120, message="everything committed")
    finally:
        first.stop()
    stream.check(redis_client)


def test_hostile_input_lands_in_the_dlq_valid_input_is_indexed_memory_stays_bounded(stream_settings, redis_client):
    settings = stream_settings(kafka={"max_poll_records": 200}, workers={"max_in_flight": 512})
    bad = bad_records()  # 54 kinds, one of them 3.9 MB, near the broker's 4 MiB maximum
    valid_tricky = tricky_valid_records()
    normal = [(f"ok-{i}".encode(), json.dumps({"id": f"ok-{i}", "text": f"평범한 기사 {i} ordinary"}).encode())
              for i in range(400)]
    records = []
    for i, (_name, key, value, _) in enumerate(bad):
        records.append((key, value))
        records.extend(normal[i * 7:(i + 1) * 7])
        if i < len(valid_tricky):
            records.append(valid_tricky[i][1:])
    records.extend(normal[len(bad) * 7:])
    from tests.helpers import create_topic

    create_topic(settings, partitions=3)
    worker = WorkerThread(settings).start()
    process = psutil.Process()
    try:
        produce(settings, records)
        wait_until(lambda: all_committed(settings), timeout=120, message="first pass committed")
        rss_after_first = process.memory_info().rss
        produce(settings, records)  # the same again: memory must not grow with the amount processed
        wait_until(lambda: all_committed(settings), timeout=120, message="second pass committed")
        rss_after_second = process.memory_info().rss
    finally:
        worker.stop()
    growth = (rss_after_second - rss_after_first) / rss_after_first
    print(f"\nhostile corpus: RSS {rss_after_first / 1e6:.0f} MB after pass 1, {rss_after_second / 1e6:.0f} MB after pass 2")
    assert growth < 0.10

    dlq = read_dlq(settings, expected=2 * len(bad))
    got = {}
    for r in dlq:
        got.setdefault(r.key, set()).add(header(r, "embedworker.error.code"))
    assert got == {key: {code} for _, key, _, code in bad}
    huge = [r for r in dlq if r.key == b"bad-near-broker-max"]
    assert huge and all(len(r.value) > 3_800_000 for r in huge), "the large record is kept whole in the DLQ"

    key = VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1).base
    valid_ids = {f"ok-{i}" for i in range(400)} | {i for i, _, _ in valid_tricky}
    assert redis_client.execute_command("VCARD", key) == len(valid_ids)
    assert json.loads(redis_client.execute_command("VGETATTR", key, "repeated"))["title"] == "final", "last write wins"
    assert redis_client.execute_command("VISMEMBER", key, "id with spaces and 한글/슬래시#hash")
