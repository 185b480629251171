"""The sink stage with a fake sink (no services): a write that hangs pauses the input within
`sink_stall_s`, before any timeout or retry; the byte bound of the ledger counts what is in flight."""

import threading
import time

from tests import helpers
from workers.sinks.base import SinkRecord
from workers.stream.ledger import DOC, OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.sink_stage import SinkStage


class HangingSink:
    name = "hanging"

    def __init__(self):
        self.release = threading.Event()
        self.given: list[int] = []

    def write(self, records):
        self.release.wait(30)
        self.given += [r.offset for r in records]

    def flush(self, now, force=False):
        pass

    def durable_offsets(self):
        return {("t", 0): max(self.given)} if self.given else {}

    def assign(self, partitions):
        pass

    def revoke(self, partitions, flush=True):
        return {}

    def close(self):
        pass


def wait_until(condition, timeout=10.0):
    helpers.wait_until(condition, timeout, interval=0.01)


def test_a_hanging_write_blocks_the_input_within_stall_seconds():
    ledger, sink = OffsetLedger(), HangingSink()
    stage = SinkStage([sink], ledger, WorkerMetrics(0), stall_s=0.3)
    stage.assign([("t", 0)])
    stage.start()
    ledger.add(("t", 0), 0, DOC, size=100)
    ledger.fill(("t", 0), 0, [SinkRecord(id="a", op="upsert", topic="t", partition=0, offset=0)])
    started = time.monotonic()
    wait_until(lambda: stage.blocked)
    assert 0.25 <= time.monotonic() - started < 3.0 and stage.stalled_s >= 0.3
    assert stage.stalled_sink == sink.name  # status names the sink that hangs
    sink.release.set()
    wait_until(lambda: not stage.blocked)
    wait_until(lambda: ledger.committable() == {("t", 0): 1})
    stage.stop(5)


def test_the_ledger_counts_in_flight_bytes_until_release_or_drop():
    ledger = OffsetLedger()
    ledger.add_many([(("t", 0), 0, DOC, None, 1000), (("t", 0), 1, DOC, None, 500), (("t", 1), 0, DOC, None, 7)])
    assert ledger.unreleased_bytes() == 1507
    ledger.fill(("t", 0), 0, ["x"])
    ledger.take_ready()
    assert ledger.unreleased_bytes() == 507
    ledger.drop([("t", 1)])
    assert ledger.unreleased_bytes() == 500


def test_batch_jobs_wait_out_backpressure_with_the_sinks_delays_then_give_up():
    """The one retry policy of a sink refusing data outside the stream (backfill units, restore)."""
    import pytest

    from workers.errors import SinkBackpressureError
    from workers.sinks.base import retry_backpressure

    clock, slept, calls = [0.0], [], []

    def sleep(s):
        slept.append(s)
        clock[0] += s

    def flaky():
        calls.append(clock[0])
        if len(calls) < 3:
            raise SinkBackpressureError("down", retry_after_s=2.0)
        return "written"

    assert retry_backpressure(flaky, 60, sleep, lambda: clock[0]) == "written" and slept == [2.0, 2.0]

    def down():
        raise SinkBackpressureError("down", retry_after_s=7.0)

    with pytest.raises(SinkBackpressureError):
        retry_backpressure(down, 30, sleep, lambda: clock[0])
    assert clock[0] <= 4.0 + 30


class WriterThreadSink(HangingSink):
    """A sink whose own writer thread has been in one write for `stall` seconds (a lake on a
    store that hangs): its write() returns at once."""

    name = "lake-like"

    def __init__(self, stall: float):
        super().__init__()
        self.stall = stall
        self.release.set()

    def background_stall_s(self) -> float:
        return self.stall


def test_a_hanging_writer_thread_of_a_sink_blocks_the_input_and_is_named():
    ledger, sink = OffsetLedger(), WriterThreadSink(stall=0.1)
    stage = SinkStage([sink], ledger, WorkerMetrics(0), stall_s=0.3)
    assert not stage.blocked and stage.stalled_sink == "lake-like"
    sink.stall = 0.5
    assert stage.blocked and stage.stalled_s == 0.5 and stage.stalled_sink == "lake-like"
    sink.stall = 0.0
    assert not stage.blocked and stage.stalled_sink is None
