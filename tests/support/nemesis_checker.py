"""The nemesis's checker, in Jepsen's manner: a history of upserts (a `version` attribute) and
deletions sent straight to the broker through a schedule of faults, what the operator saw during
each fault, the seconds from each heal to the first commit, and the end state checked against the
history after a drain (tests/support/nemesis.py makes the faults)."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import psutil
import redis

from pipelines.config import EmbedworkerSettings
from tests.support.nemesis import WORDS, Fault
from workers.kafka.clients import new_producer


@dataclass
class History:
    """The checker's producer: upserts of a fixed set of ids with a growing `version` attribute,
    and deletions, sent straight to the broker; it knows what the end state must be."""

    settings: EmbedworkerSettings  # direct
    ids: int = 300
    seed: int = 0
    latest: dict[str, int | None] = field(default_factory=dict)  # id -> version, None: deleted
    sent: int = 0

    def __post_init__(self):
        self._rng = random.Random(self.seed)
        self._producer = new_producer(self.settings.kafka, "nemesis-checker", retries=2**31 - 1,
                                      max_in_flight_requests_per_connection=1, delivery_timeout_ms=600_000)
        self._lock = threading.Lock()

    def send(self, count: int) -> None:
        with self._lock:
            for _ in range(count):
                doc_id = f"n{self._rng.randrange(self.ids):04d}"
                if self.latest.get(doc_id) is not None and self._rng.random() < 0.1:
                    value = {"id": doc_id, "op": "delete"}
                    self.latest[doc_id] = None
                else:
                    version = self.sent + 1
                    text = " ".join(self._rng.choice(WORDS) for _ in range(self._rng.randint(4, 40)))
                    value = {"id": doc_id, "text": f"{text} v{version}", "attrs": {"version": version}}
                    self.latest[doc_id] = version
                self._producer.send(self.settings.kafka.topic, key=doc_id.encode(),
                                    value=json.dumps(value, ensure_ascii=False).encode())
                self.sent += 1
            self._producer.flush()

    def close(self) -> None:
        self._producer.close()


class Feeder:
    """Sends `rate` documents a second from a thread until stopped: the load during a schedule."""

    def __init__(self, history: History, rate: float = 30.0):
        self.history, self.rate = history, rate
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(1.0):
                self.history.send(int(self.rate))
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)
        if self.error:
            raise self.error


def check_end_state(history: History, index_name: str) -> dict:
    """After the heal and a drain: counts of what is wrong (all 0 when right). lost: an offset
    missing from the lake, or a live id missing from Redis; doubled: an offset in the lake twice;
    stale: an id whose newest lake row or Redis attributes are not its latest version, or a
    deleted id still in Redis; dlq: records in the dead-letter topic (every record was good)."""
    from tests.helpers import end_offsets, read_dlq, read_parquet
    from workers.sinks.vector_sets import VectorSetIndex

    s = history.settings
    client = redis.Redis.from_url(s.redis.url)
    vindex = VectorSetIndex.stored(client, s.redis, index_name)
    pipe = client.pipeline(transaction=False)
    for doc_id in history.latest:
        pipe.execute_command("VGETATTR", vindex.key_for(doc_id), doc_id)
    lost = doubled = stale = 0
    for version, attrs in zip(history.latest.values(), pipe.execute()):
        if version is None:
            stale += attrs is not None
        elif attrs is None:
            lost += 1
        elif json.loads(attrs).get("version") != version:
            stale += 1
    table = read_parquet(s)
    pairs = list(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
    doubled += len(pairs) - len(set(pairs))
    expected = {(p, o) for p, end in end_offsets(s).items() for o in range(end)}
    lost += len(expected - set(pairs))
    newest: dict[str, tuple[int, str | None, str | None]] = {}
    for doc_id, offset, op, attrs in zip(table["id"].to_pylist(), table["kafka_offset"].to_pylist(),
                                         table["op"].to_pylist(), table["attrs"].to_pylist()):
        if doc_id not in newest or offset > newest[doc_id][0]:
            newest[doc_id] = (offset, op, attrs)
    for doc_id, version in history.latest.items():
        _, op, attrs = newest.get(doc_id, (None, None, None))
        if version is None:
            stale += op != "delete"
        elif op == "delete" or not attrs or json.loads(attrs).get("version") != version:
            stale += 1
    dlq = len(read_dlq(s, expected=0, timeout=2))
    return {"lost": lost, "doubled": doubled, "stale": stale, "dlq": dlq, "records": history.sent,
            "lake_rows": len(pairs)}


class LogTap(logging.Handler):
    """The worker's warnings and errors during a fault: what an operator reading the log saw."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.tracebacks += bool(record.exc_info) or "Traceback (most recent call last)" in message
        self.lines.append(f"{record.name}: {message}")


@dataclass
class FaultReport:
    """What one fault did: how soon the input paused (sink faults), the seconds from the heal to
    the first commit, what `status` and the log said meanwhile, and the in-flight peak."""

    fault: str
    service: str
    duration_s: float
    paused_after_s: float | None = None
    recovery_s: float | None = None
    status: str = ""
    status_s: float | None = None
    log: str = ""
    tracebacks: int = 0
    max_in_flight_bytes: int = 0
    max_in_flight: int = 0
    max_rss_mb: float = 0.0  # this process's (the worker runs in it) resident memory, at its peak
    lost: int = 0          # what went wrong in this round (the end state checked after its drain,
    doubled: int = 0       # less what the rounds before had left)
    stale: int = 0
    dlq: int = 0
    drain_s: float | None = None


def _status_problems(settings: EmbedworkerSettings, worker, box: dict) -> None:
    """`embedworker status` as its health check runs it, with the in-process replica's stats in
    place of those it would ask Ray for."""
    from pipelines.ops.status import collect_status, health
    from pipelines.stream.replica_status import replica_entry

    t0 = time.monotonic()
    try:
        report = collect_status(settings, check_health=False)
        report["actors"] = {"actors": [{"replica": 0, **replica_entry(worker.worker.stats())}], "scaling": None}
        box["problems"] = health(report, 1)
    except Exception as exc:  # noqa: BLE001 - status must not fail; recorded as what the operator saw
        box["problems"] = [f"status failed: {type(exc).__name__}: {exc}"]
    box["seconds"] = round(time.monotonic() - t0, 1)


def worker_commits(worker) -> float:
    """The sum of the offsets the worker last committed (its `embedworker_committed_offset`
    gauges, set when the broker accepted a commit): read in-process, so a frozen broker cannot
    block the reading."""
    return sum(sample.value for metric in worker.worker.metrics.registry.collect()
               if metric.name == "embedworker_committed_offset" for sample in metric.samples)


def run_fault(fault: Fault, worker, worker_settings: EmbedworkerSettings,
              recovery_timeout_s: float = 180) -> FaultReport:
    """Inject, watch the worker (every 0.1 s) and ask `status` (with the worker's settings, so
    through the faulty wire) while the fault lasts, heal, and time the first commit after it."""
    from tests.helpers import wait_until

    report = FaultReport(fault.name, fault.service, round(fault.duration_s, 1))
    tap, library_tap = LogTap(), LogTap()
    ours = logging.getLogger("embedworker")  # it does not propagate: a handler of its own
    kafka = logging.getLogger("kafka")      # kafka-python's records, their tracebacks dropped by workers.logs
    ours.addHandler(tap)
    kafka.addHandler(library_tap)
    try:
        fault.inject()
        t0 = time.monotonic()
        status_box: dict = {}
        asker = threading.Thread(target=_status_problems, args=(worker_settings, worker, status_box), daemon=True)
        asking_at = t0 + min(3.0, fault.duration_s / 2)
        # the fault lasts its duration, and until status answered (60 s more at most: longer is a finding)
        while (now := time.monotonic()) < t0 + fault.duration_s or (asker.is_alive() and now < t0 + fault.duration_s + 60):
            stats = worker.worker.stats()
            if stats.get("paused") and report.paused_after_s is None:
                report.paused_after_s = round(now - t0, 2)
            report.max_in_flight_bytes = max(report.max_in_flight_bytes, stats.get("in_flight_bytes", 0))
            report.max_in_flight = max(report.max_in_flight, stats.get("in_flight", 0))
            report.max_rss_mb = max(report.max_rss_mb, round(psutil.Process().memory_info().rss / 2**20, 1))
            if now >= asking_at and not asker.is_alive() and not asker.ident:
                asker.start()
            time.sleep(0.1)
        before = worker_commits(worker)
        fault.heal()
        healed = time.monotonic()
        wait_until(lambda: worker_commits(worker) > before, timeout=recovery_timeout_s,
                   interval=0.05, message=f"a commit after the heal of {fault.name}")
        report.recovery_s = round(time.monotonic() - healed, 2)
        if asker.ident:
            asker.join(120)
    finally:
        ours.removeHandler(tap)
        kafka.removeHandler(library_tap)
    report.status = "; ".join(status_box.get("problems", ["(status did not answer within the fault + 60 s)"])) or "healthy"
    report.status_s = status_box.get("seconds")
    report.log = tap.lines[0] if tap.lines else ""
    report.tracebacks = tap.tracebacks + library_tap.tracebacks  # as printed
    return report


def overlapping(first: Fault, second: Fault) -> Fault:
    """Two faults at once: both injected, both healed after the longer one."""
    def inject():
        first.inject()
        second.inject()

    def heal():
        second.heal()
        first.heal()
    return Fault(f"{first.name} + {second.name}", f"{first.service}+{second.service}",
                 max(first.duration_s, second.duration_s), inject, heal)


def run_schedule(faults: list[Fault], worker_settings: EmbedworkerSettings, checker: EmbedworkerSettings,
                 index_name: str, seed: int = 0, rate: float = 30.0, on_report=None) -> tuple[list[FaultReport], dict]:
    """A worker (through the proxies) under a steady feed, the faults one after another; after
    each, the feed stops, the worker drains, and the end state is checked, so every problem is
    charged to the round that made it. Returns the reports and the final check."""
    from tests.helpers import WorkerThread, all_committed, committed_offsets, create_topic, wait_until

    create_topic(checker, partitions=3)
    history = History(checker, seed=seed)
    history.send(150)
    worker = WorkerThread(worker_settings).start()
    feeder = None
    reports: list[FaultReport] = []
    before = {"lost": 0, "doubled": 0, "stale": 0, "dlq": 0}
    try:
        wait_until(lambda: sum(committed_offsets(checker).values()) >= 100, timeout=180, message="the first commits")
        for fault in faults:
            feeder = Feeder(history, rate).start()
            report = run_fault(fault, worker, worker_settings)
            feeder.stop()
            feeder = None
            drain_from = time.monotonic()
            wait_until(lambda: all_committed(checker), timeout=300, message=f"the drain after {fault.name}",
                       diagnose=lambda: f"committed {committed_offsets(checker)}, worker {worker.worker.stats()}")
            report.drain_s = round(time.monotonic() - drain_from, 1)
            end = check_end_state(history, index_name)
            for key in before:
                setattr(report, key, end[key] - before[key])
                before[key] = end[key]
            reports.append(report)
            if on_report:
                on_report(report)
        alive = worker.thread.is_alive() and worker.error is None
    finally:
        if feeder:
            feeder.stop()
        worker.stop()
        history.close()
    end = check_end_state(history, index_name)
    end["worker_survived"] = alive
    return reports, end
