"""EmbeddingWorker: what runs inside one Ray actor (or any process).

    poll -> validate --bad--> dead-letter topic
         -> tokenize (pool) -> token-budget batches -> encode (encode thread)
         -> Redis vector sets + Parquet, offset order per partition (sink thread)
         -> commit only offsets every sink holds durably (this thread)

The constructor only stores settings (cheap, picklable: Ray ships it); `setup()` loads the model
and opens connections. `run()` loops until `stop()` is called, then drains: stops polling,
finishes in-flight batches, flushes the sinks, commits, closes.

Threads (the one place this is described):
- the polling thread runs `run()`: poll, validate, hand documents to the encode stage, publish
  rejections, pause/resume, commit. It alone calls the consumer (kafka-python's is not
  thread-safe).
- kafka-python's IO thread (`kafka-io-<client id>`) runs the rebalance listener
  (`PartitionOwnership.assigned`, `.revoked`, workers/stream/partitions.py) while the polling
  thread waits inside `poll()`; its lock makes a rebalance happen wholly before or after the
  polling thread takes a poll's records.
- the encode thread (EncodeStage) batches and runs the model; tokenizing runs in the encoder's
  thread pool or processes.
- the sink thread (SinkStage) writes to every sink in offset order per partition under the sink
  stage's lock and waits out backoff delays without it.
- the DLQ producer's own thread acknowledges rejections; the lake has a writer thread; the metrics
  endpoint has a server thread.

Every one of them is supervised (workers/stream/threads.py): at each poll the polling thread
checks that each is alive and has not failed; an unexpected exception anywhere is the replica's
failure (ReplicaError, one sentence naming the thread; the supervisor restarts the replica), the
project's own errors stop the stream in words. A failed run() stops and closes everything it
opened (a thread that does not stop is ThreadStuckError: the process is restarted), so a replica
set up again in the same process never holds two models or binds its metrics port twice.

What a replica holds in flight (polled, not yet handed to the sinks) is bounded by seconds of its
own measured encode rate (`workers.max_in_flight_s`), under the document and byte caps: a slow
replica with a backlog polls little at a time, writes within seconds and commits every interval.
The loop's body is `poll_step()`, which the simulation (tests/simulation/) drives step by step.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from workers import logs
from workers.documents import DocumentLimits
from workers.encoding.encoder import Encoder
from workers.errors import EmbedworkerError, ReplicaError
from workers.kafka.dead_letters import DeadLetterPublisher
from workers.kafka.source import KafkaSource
from workers.settings import (
    BatchingSettings,
    DocumentSettings,
    KafkaSettings,
    ModelSettings,
    ParquetSettings,
    RedisSettings,
    WorkersSettings,
    model_slug,
)
from workers.sinks.base import Sink
from workers.sinks.lake import new_parquet_sink
from workers.sinks.redis_vset import RedisVectorSetSink
from workers.stream.encode_stage import EncodeStage
from workers.stream.intake import RecordIntake
from workers.stream.ledger import OffsetLedger
from workers.stream.metrics import WorkerMetrics
from workers.stream.partitions import PartitionOwnership
from workers.stream.sink_stage import SinkStage
from workers.stream.threads import SYSTEM_CLOCK, Clock, check_threads, stop_all

log = logging.getLogger("embedworker.worker")

START_IN_FLIGHT = 16   # documents a replica holds before its encode rate is measured (a cautious start)
CLOSE_TIMEOUT_S = 30.0  # how long a failed replica's threads get to stop before its process is restarted


def ray_node_id() -> str | None:
    """The Ray node this replica runs on (None outside Ray): `status` shows it."""
    ray = sys.modules.get("ray")  # in an actor Ray is loaded; elsewhere (tests, a bare box) it need not be
    return ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else None


class EmbeddingWorker:
    clock: Clock = SYSTEM_CLOCK
    poll_timeout_ms = 50
    configure_logging = True
    encoder: Encoder
    encode_stage: EncodeStage
    sink_stage: SinkStage
    source: KafkaSource
    dlq: DeadLetterPublisher
    partitions: PartitionOwnership
    intake: RecordIntake

    def __init__(self, kafka: KafkaSettings, model: ModelSettings, batching: BatchingSettings,
                 documents: DocumentSettings, redis: RedisSettings, parquet: ParquetSettings,
                 workers: WorkersSettings, replica: int = 0, stop_offsets: dict[str, int] | None = None):
        self.kafka_settings, self.model_settings, self.batching = kafka, model, batching
        self.limits = DocumentLimits(max_record_bytes=kafka.max_message_bytes, **documents.model_dump())
        self.redis_settings, self.parquet_settings, self.workers_settings = redis, parquet, workers
        self.replica = replica
        # Bounded replays: per "topic:partition", the offset where consumption ends.
        self.stop_offsets = stop_offsets or {}
        self._stop = threading.Event()
        self._ready = False
        self._state = "created"
        self._scaling: dict | None = None  # the group's scaling state, from the supervisor

    # ---- lifecycle ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Load the model, open the sinks, the DLQ producer and the consumer. Raises
        ModelNotFoundError, SinkError, SourceError (all EmbedworkerError) with the reason; what
        was opened before the failure is closed again."""
        if self.configure_logging:
            logs.configure()  # level and format come from the environment the supervisor set
        for secret in (self.redis_settings.password, self.kafka_settings.security.sasl_password):
            if secret is not None:
                logs.register_secret(secret.get_secret_value())
        try:
            self._open()
        except BaseException:
            self._close()
            raise
        self._ready = True
        self._state = "running"

    def _open(self) -> None:
        m, w = self.model_settings, self.workers_settings
        self.metrics = WorkerMetrics(self.replica)
        self.ledger = OffsetLedger()
        self._last_commit = self._last_lag = self._last_resend = self.clock.monotonic()
        self._state = "loading model"
        self.encoder = self._load_encoder()
        self._state = "connecting"
        sinks = self._open_sinks()
        self.sink_stage = SinkStage(sinks, self.ledger, self.metrics, w.sink_stall_s, clock=self.clock)
        for sink in sinks:
            sink.setup()
        self.encode_stage = EncodeStage(self.encoder, self.ledger, self.metrics, self.batching.max_wait_ms,
                                        self.batching.max_padding, m.chunking.enabled, self.batching.window_batches,
                                        clock=self.clock)
        self.dlq = self._open_dead_letters()
        self.dlq.setup()
        self.source = self._open_source()
        self.partitions = PartitionOwnership(self.replica, self.ledger, self.sink_stage, self.metrics, self.source,
                                             self.stop_offsets)
        self.intake = RecordIntake(self.kafka_settings.topic, m, self.limits, self.partitions, self.ledger,
                                   self.encode_stage, self.dlq, self.source, self.metrics, self.clock)
        self.source.setup(self.partitions.assigned, self.partitions.revoked)
        if w.metrics_port is not None:
            self.metrics.serve(w.metrics_port + self.replica)
        self._node = ray_node_id()

    # The parts, built from the settings; the simulation (tests/simulation/) swaps in fakes here.

    def _load_encoder(self) -> Encoder:
        return Encoder.from_settings(self.model_settings, self.batching)

    def _open_sinks(self) -> list[Sink]:
        """The configured sinks, not yet set up. EmbedworkerError when none is enabled."""
        m = self.model_settings
        sinks: list[Sink] = []
        if self.redis_settings.enabled:
            redis_sink = RedisVectorSetSink(self.redis_settings, model_slug(m.name), m.name, self.encoder.dim,
                                            m.document_prefix)
            redis_sink.on_too_old = self.metrics.too_old
            redis_sink.on_stale = self.metrics.stale_refused
            sinks.append(redis_sink)
        if self.parquet_settings.enabled:
            sinks.append(new_parquet_sink(self.parquet_settings, self.redis_settings.index_name(m.name), m.name,
                                          self.encoder.revision, self.encoder.dim, m.document_prefix))
        if not sinks:
            raise EmbedworkerError("redis.enabled and parquet.enabled are both false: nothing to write to")
        return sinks

    def _open_dead_letters(self) -> DeadLetterPublisher:
        return DeadLetterPublisher(self.kafka_settings)

    def _open_source(self) -> KafkaSource:
        return KafkaSource(self.kafka_settings, self.replica, on_error=self.metrics.source_error)

    def run(self) -> dict:
        """Consume until stop(); then drain and return the final stats. Raises on fatal errors
        (a failed thread, a sink or source error) after stopping and closing everything."""
        if not self._ready:
            self.setup()
        drained = False
        try:
            self.encode_stage.start()
            self.sink_stage.start()
            while not self._stop.is_set():
                self.poll_step()
            stats = self._drain()
            drained = True
            return stats
        finally:
            self._close(leave=drained)

    def poll_step(self) -> bool:
        """One round of the polling thread: check every thread, pause or resume, poll within the
        in-flight bound, take the records, commit what is durable when the interval is due.
        Returns whether records came."""
        self.check_threads()
        limit = self._apply_backpressure()
        epochs = self.partitions.epochs()
        room = max(1, min(self.kafka_settings.max_poll_records, limit - self.ledger.unreleased()))
        records = self.source.poll(timeout_ms=self.poll_timeout_ms, max_records=room)
        if records:
            self.intake.take(records, epochs)
        now = self.clock.monotonic()
        if now - self._last_commit >= self.kafka_settings.commit_interval_ms / 1000.0:
            self.partitions.finish_bounded()
            self.partitions.commit()
            self.metrics.in_flight.set(self.ledger.unreleased())
            self._last_commit = now
        if now - self._last_lag >= 5.0:
            self.metrics.lag(self.source.lag())
            self._record_gpu_memory()
            self._last_lag = now
        if now - self._last_resend >= 5.0:
            self.dlq.resend_unacked()
            self.metrics.dlq_unacked.set(self.dlq.unacked()[0])
            self._last_resend = now
        return bool(records)

    def check_threads(self) -> None:
        """Raise the failure of any thread of this replica: ReplicaError naming the thread (the
        replica is restarted), or the project's own error (the stream stops in words)."""
        checks: list[tuple[str, Callable[[], BaseException | None]]] = [
            (stage.name, stage.failure) for stage in (self.encode_stage, self.sink_stage)]
        checks += [(f"{sink.name} sink", sink.failure) for sink in self.sink_stage.sinks]
        checks += [("dead-letter producer", self.dlq.failure), ("metrics server", self.metrics.failure)]
        check_threads(checks)

    def stop(self) -> None:
        """Ask run() to drain and return (thread-safe; called from the supervisor)."""
        self._stop.set()

    def ready(self) -> bool:
        return self._ready

    def set_scaling(self, state: dict) -> None:
        """The supervisor tells every replica the group's desired and running replica counts
        (after each change), so `status` can tell a replica removed on purpose from a lost one."""
        self._scaling = state

    def pid(self) -> int:
        """The process id (for operators and fault-injection tests)."""
        return os.getpid()

    def stats(self) -> dict:
        out: dict[str, Any] = {"replica": self.replica, "state": self._state, "scaling": self._scaling}
        if self._ready:
            dlq_unacked, dlq_waited_s = self.dlq.unacked()
            out.update(self.metrics.snapshot())
            rate = self.encode_stage.meter.rate
            out.update(device=str(self.encoder.device), dtype=self.encoder.dtype,
                       torch_threads=torch.get_num_threads(), in_flight=self.ledger.unreleased(), pending_commit=self.ledger.pending(),
                       in_flight_limit=self._in_flight_limit(), encode_docs_per_s=None if rate is None else round(rate, 1),
                       paused=self.source.paused, sink_error=self.sink_stage.last_error,
                       stalled_s=round(self.sink_stage.stalled_s, 1),
                       stalled_sink=self.sink_stage.stalled_sink, in_flight_bytes=self.ledger.unreleased_bytes(),
                       committed_lag=out.get("lag", 0) + self.ledger.pending(),
                       dlq_unacked=dlq_unacked, dlq_unacked_s=dlq_waited_s, dlq_error=self.dlq.last_error,
                       source_error=self.source.last_error, node=self._node,
                       partitions=[f"{t}:{p}" for t, p in self.ledger.partitions()])
        return out

    # ---- the polling thread ---------------------------------------------------------------------

    def _in_flight_limit(self) -> int:
        w = self.workers_settings
        return self.encode_stage.in_flight_limit(w.max_in_flight_s, min(START_IN_FLIGHT, w.max_in_flight),
                                                 w.max_in_flight)

    def _apply_backpressure(self) -> int:
        """Pause every partition (those assigned later too: the source pauses them as they
        come) while the in-flight bound is reached or a sink refuses data; resume after. Returns
        the bound: documents, by seconds of the measured encode rate."""
        w = self.workers_settings
        limit = self._in_flight_limit()
        self.sink_stage.take_limit = limit
        full = self.ledger.unreleased() >= limit or self.ledger.unreleased_bytes() >= w.max_in_flight_bytes
        should_pause = full or self.sink_stage.blocked
        if should_pause and not self.source.paused:
            self.source.pause()
        elif not should_pause and self.source.paused:
            self.source.resume()
        self.metrics.paused.set(1 if self.source.paused else 0)
        self.metrics.in_flight_limit.set(limit)
        return limit

    def _record_gpu_memory(self) -> None:
        if self.encoder.device.type == "cuda":
            self.metrics.gpu_memory.set(torch.cuda.memory_allocated(self.encoder.device))

    # ---- shutdown -------------------------------------------------------------------------------

    def _drain(self) -> dict:
        self._state = "draining"
        deadline = time.monotonic() + self.workers_settings.drain_timeout_s
        if not self.encode_stage.drain_and_stop(max(1.0, deadline - time.monotonic())):
            log.warning("drain: the encode thread did not finish in time; uncommitted records will be read again")
        while self.ledger.unreleased() > 0 and time.monotonic() < deadline and self.sink_stage.error is None:
            time.sleep(0.02)
        self.sink_stage.stop(max(1.0, deadline - time.monotonic()))
        while self.sink_stage.pending or self.ledger.unreleased():
            if not self.sink_stage.step(force_flush=True) and (time.monotonic() > deadline or self.sink_stage.blocked):
                break
        self.sink_stage.step(force_flush=True)
        self.dlq.flush(max(1.0, deadline - time.monotonic()))
        self.partitions.commit()
        self.check_threads()
        stats = self.stats()
        self._state = "stopped"
        stats["state"] = "stopped"
        log.info("replica %s drained: %s", self.replica, stats)
        return stats

    def _close(self, leave: bool = False) -> None:
        """Stop every thread and close everything; called after a drain and after a failure, so
        that setting the replica up again in this process starts clean. `leave` after a drain:
        the consumer leaves the group at once, so the partitions move to the other replicas now;
        after a failure it stays a member until the session times out (a restart takes its
        partitions back). Raises ThreadStuckError when a thread did not stop (the supervisor
        then restarts the process), after closing the rest."""
        self._ready = False
        stuck: BaseException | None = None
        stages = [getattr(self, name) for name in ("encode_stage", "sink_stage") if hasattr(self, name)]
        try:
            stop_all(stages, CLOSE_TIMEOUT_S)
        except ReplicaError as exc:
            stuck = exc
            log.error("replica %s: %s", self.replica, exc)
        for name in ("sink_stage", "dlq", "source", "encoder", "metrics"):
            part = getattr(self, name, None)
            if part is None:
                continue
            try:
                part.close(leave=leave) if name == "source" else part.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("closing %s: %s", name, exc)
        # drop every reference to the model, so that a replica set up again here holds one
        for name in ("encode_stage", "sink_stage", "source", "dlq", "encoder", "partitions", "intake"):
            self.__dict__.pop(name, None)
        self._release_memory()
        if stuck is not None:
            raise stuck

    def _release_memory(self) -> None:
        """Free what the dropped model held now (its tensors, the CUDA cache), not at some
        later collection: the replica may be set up again in this process at once."""
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
