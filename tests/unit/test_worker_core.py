"""The worker core's rebalance, commit and thread-failure logic on the simulation's fakes
(tests/support): each defect the core had, reproduced, with the behaviour that replaced it.
Steps are driven by hand in simulated time, except where real threads are the point."""

from __future__ import annotations

import json
import threading
import time
import weakref
from dataclasses import dataclass, field

import pytest

from tests.simulation.sim_worker import SimWorker
from tests.support.fake_encoder import SimClock
from tests.support.fake_kafka import FakeDeadLetters, FakeKafka
from tests.support.fake_sinks import FakeLake, FakeRedis
from workers.errors import ReplicaError, SinkBackpressureError, SinkError
from workers.settings import (
    BatchingSettings,
    DocumentSettings,
    KafkaSettings,
    ModelSettings,
    ParquetSettings,
    RedisSettings,
    WorkersSettings,
)
from workers.stream.threads import Clock

TP0 = ("sim", 0)


@dataclass
class Env:
    """What SimWorker takes from a simulation: the clock and the shared fakes."""

    clock: Clock = field(default_factory=SimClock)
    partitions: int = 1
    seconds_per_token: float = 0.001

    def __post_init__(self):
        self.kafka = FakeKafka("sim", self.partitions, self.clock.monotonic)
        self.redis, self.lake = FakeRedis(), FakeLake()

    def worker(self, replica: int = 0, stop_offsets=None, **workers) -> SimWorker:
        w = SimWorker(self, replica, kafka=KafkaSettings(topic="sim", commit_interval_ms=100),
                      model=ModelSettings(name="sim-model"), batching=BatchingSettings(max_wait_ms=0),
                      documents=DocumentSettings(), redis=RedisSettings(),
                      parquet=ParquetSettings(max_seconds=0.2), workers=WorkersSettings(num_gpus=0, **workers))
        w.stop_offsets = stop_offsets or {}
        w.setup()
        return w

    def produce(self, n: int, partition: int = 0, start: int = 0) -> None:
        for i in range(start, start + n):
            self.kafka.produce(partition, f"d{i}".encode(), json.dumps({"id": f"d{i}", "text": "word " * 40}).encode())

    def run(self, w: SimWorker, seconds: float, step_s: float = 0.05) -> None:
        """Every thread of `w` once per `step_s` of simulated time (poll failures propagate)."""
        end = self.clock.now + seconds  # type: ignore[attr-defined]
        while self.clock.now < end:  # type: ignore[attr-defined]
            w.poll_step()
            w.encode_stage.run_once()
            self.clock.now += w.encoder.take_cost()  # type: ignore[attr-defined]
            w.encode_stage.run_once()  # collects what was launched
            w.sink_stage.run_once()
            w.lake.step_writer()
            w.dlq.deliver()
            self.clock.now += step_s  # type: ignore[attr-defined]


def test_what_a_replica_holds_is_bounded_by_seconds_of_its_measured_rate():
    """A backlog of 2,000: before, a replica polled up to max_in_flight (4,096) at once and a
    slow one held minutes of work; now it holds max_in_flight_s of its measured encode rate."""
    env = Env(seconds_per_token=0.002)  # ~25 documents of 40 words per second
    env.produce(2000)
    w = env.worker(max_in_flight_s=2.0)
    env.run(w, 0.05)
    assert w.ledger.unreleased() <= 16, "a cautious start before any rate is measured"
    env.run(w, 10.0)
    rate = w.encode_stage.meter.rate
    assert rate is not None and 5 < rate < 100
    limit = w._in_flight_limit()
    assert limit == max(8, int(rate * 2.0))
    assert w.ledger.unreleased() <= limit + 1
    assert env.kafka.committed.get(TP0, 0) > 0, "commits flow during the backlog"


def test_a_dead_thread_stops_the_replica_at_its_next_poll_in_one_sentence():
    env = Env()
    env.produce(20)
    w = env.worker()
    env.run(w, 0.3)
    w.encoder.fail_next = True
    w.poll_step()
    w.encode_stage.run_once()
    assert w.encode_stage.error is not None
    with pytest.raises(ReplicaError, match="the encode thread died: RuntimeError: CUDA error"):
        w.poll_step()


def test_a_sink_error_no_retry_fixes_stops_the_stream_in_words():
    env = Env()
    env.produce(5)
    w = env.worker()
    env.redis.faults.permanent = True
    with pytest.raises(SinkError, match="refused for good"):
        env.run(w, 2.0)


def test_the_lake_writer_dying_is_the_replicas_failure(tmp_path):
    """Before, the Parquet writer thread caught only backpressure: anything else ended it with no
    log, and the replica went on buffering with commits stopped for good."""
    from workers.sinks.base import SinkRecord
    from workers.sinks.parquet import ParquetSink

    class Broken(ParquetSink):
        def _write_pieces(self, pieces, expected):
            raise RuntimeError("a bug in the writer")

    sink = Broken(ParquetSettings(path=str(tmp_path), format="files"), "idx", "m", None, 4, "")
    sink.setup()
    sink.assign([TP0])
    sink.write([SinkRecord(id="a", op="delete", topic="sim", partition=0, offset=0)])
    with pytest.raises(RuntimeError, match="a bug in the writer"):
        sink.flush(0.0, force=True, timeout=5)
    assert isinstance(sink.failure(), RuntimeError)
    # the replica: its poll names the sink
    env = Env()
    env.produce(5)
    w = env.worker()
    w.poll_step()  # assigned: what the lake holds is read
    env.lake.faults.broken = True
    with pytest.raises(ReplicaError, match="the parquet sink thread died: RuntimeError"):
        env.run(w, 3.0)


def test_a_lake_outage_over_a_revoke_does_not_pause_the_replica_for_ever():
    """Found by the simulation (seed 282): the lake refused a flush, then the partition was lost;
    the refusal stayed as the sink's error with nothing left to retry, every flush raised it,
    and the replica stayed paused after the lake came back."""
    env = Env()
    env.produce(10)
    w = env.worker()
    env.lake.faults.transient = True
    env.run(w, 1.0)
    assert w.sink_stage.blocked
    env.kafka.evict(0)  # the partition is lost during the outage (the replica polls on and rejoins)
    env.run(w, 0.5)
    env.lake.faults.transient = False
    env.run(w, 3.0)
    assert not w.sink_stage.blocked and env.kafka.committed.get(TP0) == 10


def test_a_bounded_replay_finishes_at_a_transaction_marker():
    """The last offset below the end is a commit marker, which no consumer sees: before, the
    committed offset stayed one short of the end and the replay waited for ever."""
    env = Env()
    env.produce(6)
    env.kafka.produce_marker(0)
    w = env.worker(stop_offsets={"sim:0": env.kafka.end(TP0)})
    env.run(w, 3.0)
    assert env.kafka.committed[TP0] == 7


def test_per_partition_gauges_of_a_revoked_partition_are_removed():
    env = Env(partitions=2)
    w = env.worker()
    env.run(w, 0.2)
    w.metrics.lag({TP0: 5, ("sim", 1): 7})
    w.metrics.committed({TP0: 3})
    w.partitions.revoked([TP0], True)

    def samples(name):
        return {s.labels.get("partition") for m in w.metrics.registry.collect() if m.name == name for s in m.samples}

    assert samples("embedworker_consumer_lag") == {"1"}
    assert "0" not in samples("embedworker_committed_offset")
    assert w.metrics.snapshot()["lag"] == 7


def test_a_dead_letter_send_never_holds_the_lock_the_rebalance_needs():
    """A DLQ send may wait seconds for the topic's metadata (kafka-python: max_block_ms, 60 s by
    default); before, it ran under the ownership lock, so the rebalance listener (and the
    heartbeats behind it) waited too."""
    env = Env()
    env.kafka.produce(0, b"bad", b"{not json")
    w = env.worker()
    entered, release = threading.Event(), threading.Event()

    class SlowDeadLetters(FakeDeadLetters):
        def publish(self, rej, on_acked):
            entered.set()
            release.wait(10)
            super().publish(rej, on_acked)

    w.dlq = w.intake.dlq = SlowDeadLetters(env.kafka)
    w.poll_step()  # the assignment (records polled with it are fetched again)
    poller = threading.Thread(target=w.poll_step)
    poller.start()
    assert entered.wait(5)
    started = time.monotonic()
    w.partitions.revoked([TP0], True)  # the listener, on Kafka's IO thread
    assert time.monotonic() - started < 1.0
    release.set()
    poller.join(5)


def test_a_failed_run_stops_and_closes_everything_it_opened(unused_port):
    """Before, a failed run() left its encode and sink threads running and its metrics port
    bound; the supervisor's next run() in the same process loaded a second model."""
    env = Env(clock=Clock())
    env.produce(50)
    w = SimWorker(env, 0, kafka=KafkaSettings(topic="sim", commit_interval_ms=100), model=ModelSettings(name="m"),
                  batching=BatchingSettings(), documents=DocumentSettings(), redis=RedisSettings(),
                  parquet=ParquetSettings(max_seconds=0.2),
                  workers=WorkersSettings(num_gpus=0, metrics_port=unused_port))
    w._open_source = lambda: __import__("tests.support.fake_kafka", fromlist=["FakeSource"]).FakeSource(
        env.kafka, 0, idle_sleep=True)
    w.setup()
    encoder = weakref.ref(w.encoder)
    env.redis.faults.broken = True
    with pytest.raises(ReplicaError, match="the sinks thread died"):
        w.run()
    alive = {t.name for t in threading.enumerate()}
    assert not alive & {"encode", "sinks"}
    assert encoder() is None, "the model is released"
    env.redis.faults.broken = False
    w.setup()  # set up again in the same process: binds the metrics port again
    assert w.encoder is not encoder()
    w._close()


@pytest.fixture
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sink_refusing_data_is_retried_not_a_failure():
    env = Env()
    env.produce(10)
    w = env.worker()
    env.redis.faults.transient = True
    env.run(w, 2.0)
    assert w.sink_stage.blocked and w.source.paused
    assert isinstance(w.sink_stage.error, type(None))
    env.redis.faults.transient = False
    env.run(w, 3.0)
    assert env.kafka.committed.get(TP0) == 10
    assert SinkBackpressureError  # the kind of error that is retried
