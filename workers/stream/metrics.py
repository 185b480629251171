"""Prometheus metrics of one worker (prometheus_client, a registry per worker).

Every metric carries the label `replica`. When `workers.metrics_port` is set, replica i serves
them at http://<node>:<metrics_port + i>/metrics. `snapshot()` gives the same numbers as a dict
(for the supervisor's summary log and `embedworker status`): counts, the padding ratio,
`docs_per_s_1m` (documents written per second over the last minute) and `lag` (the last
sampled lag summed over this replica's partitions).

Every metric, with its type, labels and help text, is listed in docs/reference/metrics.md,
generated from this registry by docs/generate.py.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
RATE_WINDOW_S = 60.0
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TOKEN_BUCKETS = (256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)


class WorkerMetrics:
    def __init__(self, replica: int = 0):
        self.registry = CollectorRegistry()
        r, reg = str(replica), self.registry
        self.replica = r
        self._consumed = Counter("embedworker_records_consumed", "Records polled from Kafka", ["replica", "topic"], registry=reg)
        self._embedded = Counter("embedworker_documents_embedded", "Documents whose vectors are ready", ["replica"],
                                 registry=reg).labels(r)
        self._rejected = Counter("embedworker_records_rejected",
                                 "Records sent to the dead-letter topic, by reason code", ["replica", "reason"],
                                 registry=reg)
        self._deleted = Counter("embedworker_documents_deleted", "Records with op delete", ["replica"],
                                registry=reg).labels(r)
        self._stale = Counter("embedworker_stale_writes_refused", "Redis element writes refused as older than what "
                              "the element holds (a replica that lost the partition writing late)", ["replica"],
                              registry=reg).labels(r)
        self._too_old = Counter("embedworker_documents_too_old", "Documents older than redis.retention on arrival "
                                "(the lake has them, Redis not)", ["replica"], registry=reg).labels(r)
        self._written = Counter("embedworker_records_written", "Records each sink (redis, parquet) took",
                                ["replica", "sink"], registry=reg)
        self._batch_size = Histogram("embedworker_batch_size", "Texts (chunks) per forward batch", ["replica"],
                                     buckets=BATCH_BUCKETS, registry=reg).labels(r)
        self._batch_tokens = Histogram("embedworker_batch_padded_tokens", "Padded tokens per forward batch",
                                       ["replica"], buckets=TOKEN_BUCKETS, registry=reg).labels(r)
        self._padding = Gauge("embedworker_padding_ratio", "Padded / real tokens - 1, since the replica started",
                              ["replica"], registry=reg).labels(r)
        self._encode = Histogram("embedworker_encode_seconds", "Forward seconds per batch", ["replica"],
                                 buckets=LATENCY_BUCKETS, registry=reg).labels(r)
        self._sink = Histogram("embedworker_sink_write_seconds", "Seconds per sink write or flush", ["replica", "sink"],
                               buckets=LATENCY_BUCKETS, registry=reg)
        self._latency = Histogram("embedworker_end_to_end_latency_seconds",
                                  "Seconds from the Kafka record timestamp to written in every sink",
                                  ["replica"], buckets=LATENCY_BUCKETS, registry=reg).labels(r)
        self._lag = Gauge("embedworker_consumer_lag", "End offset minus position per partition (sampled every 5 s)",
                          ["replica", "topic", "partition"], registry=reg)
        self._committed = Gauge("embedworker_committed_offset", "Last committed offset per partition",
                                ["replica", "topic", "partition"], registry=reg)
        self.in_flight = Gauge("embedworker_in_flight_documents", "Documents polled, not yet written", ["replica"],
                               registry=reg).labels(r)
        self.in_flight_limit = Gauge("embedworker_in_flight_limit", "Documents the replica may hold: "
                                     "workers.max_in_flight_s of its measured encode rate, under the caps",
                                     ["replica"], registry=reg).labels(r)
        self.paused = Gauge("embedworker_paused", "1 while the replica's partitions are paused (backpressure)",
                            ["replica"], registry=reg).labels(r)
        self._sink_errors = Counter("embedworker_sink_errors", "Sink write attempts that failed (then retried)",
                                    ["replica", "sink"], registry=reg)
        self._source_errors = Counter("embedworker_source_errors",
                                      "Kafka polls that failed, by error class (then backed off)",
                                      ["replica", "error"], registry=reg)
        self.dlq_unacked = Gauge("embedworker_dlq_unacked",
                                 "Rejected records the dead-letter topic has not acknowledged (their partitions' "
                                 "commits wait)", ["replica"], registry=reg).labels(r)
        self.gpu_memory = Gauge("embedworker_gpu_memory_bytes", "CUDA memory allocated by the encoder", ["replica"],
                                registry=reg).labels(r)
        self._real_tokens = 0
        self._padded_tokens = 0
        self.counts = {"consumed": 0, "embedded": 0, "rejected": 0, "deleted": 0, "written": 0, "batches": 0,
                       "too_old": 0, "stale_refused": 0}
        # Seconds the encode and sink threads spent working: with `written`, the autoscaler's
        # processing rate of a replica that is not saturated (pipelines/stream/autoscaler.py).
        self.busy_s = {"encode": 0.0, "sink": 0.0}
        self.started = time.time()
        self._recent: deque[tuple[float, int]] = deque()  # (monotonic time, documents written)
        self._recent_lock = threading.Lock()  # the sink thread appends, stats() reads
        self._last_lag: dict[tuple[str, int], int] = {}
        self._sink_children: dict[str, tuple] = {}
        self._server: WSGIServer | None = None
        self._server_thread: threading.Thread | None = None

    def serve(self, port: int) -> None:
        """Expose /metrics over HTTP on `port` (called when the replica is set up; `close()`
        frees the port, so a replica set up again in the same process binds it again)."""
        self._server, self._server_thread = start_http_server(port, registry=self.registry)

    def failure(self) -> BaseException | None:
        """The metrics server's thread ended (None while it serves, or when none was asked for)."""
        if self._server_thread is not None and not self._server_thread.is_alive():
            return RuntimeError("the metrics server stopped")
        return None

    def close(self) -> None:
        server, self._server, self._server_thread = self._server, None, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def consumed(self, topic: str, n: int) -> None:
        self._consumed.labels(self.replica, topic).inc(n)
        self.counts["consumed"] += n

    def embedded(self, n: int = 1) -> None:
        self._embedded.inc(n)
        self.counts["embedded"] += n

    def deleted(self, n: int = 1) -> None:
        self._deleted.inc(n)
        self.counts["deleted"] += n

    def stale_refused(self, n: int) -> None:
        self._stale.inc(n)
        self.counts["stale_refused"] += n

    def too_old(self, n: int) -> None:
        self._too_old.inc(n)
        self.counts["too_old"] += n

    def rejected(self, reason: str) -> None:
        self._rejected.labels(self.replica, reason).inc()
        self.counts["rejected"] += 1

    def observe_batch(self, size: int, real_tokens: int, padded_tokens: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._batch_tokens.observe(padded_tokens)
        self._encode.observe(seconds)
        self._real_tokens += real_tokens
        self._padded_tokens += padded_tokens
        self._padding.set(self._padded_tokens / max(1, self._real_tokens) - 1)
        self.counts["batches"] += 1

    def encode_busy(self, seconds: float) -> None:
        """The encode thread worked this long on a round of batches (launches overlap, so the
        batches' own seconds would count some time twice)."""
        self.busy_s["encode"] += seconds

    def sink_write(self, sink: str, records: int, seconds: float) -> None:
        """Called for every write and flush of every sink: the labelled children are looked up
        once per sink (prometheus_client's labels() builds a key each call)."""
        children = self._sink_children.get(sink)
        if children is None:
            children = self._sink_children[sink] = (self._sink.labels(self.replica, sink),
                                                    self._written.labels(self.replica, sink))
        children[0].observe(seconds)
        self.busy_s["sink"] += seconds
        if records:
            children[1].inc(records)

    def sink_error(self, sink: str) -> None:
        self._sink_errors.labels(self.replica, sink).inc()

    def source_error(self, error: str) -> None:
        self._source_errors.labels(self.replica, error).inc()

    def written(self, event_times_ms: list[int | None], now: float) -> None:
        for ts in event_times_ms:
            if ts is not None:
                self._latency.observe(max(0.0, now - ts / 1000.0))
        self.counts["written"] += len(event_times_ms)
        with self._recent_lock:
            self._recent.append((time.monotonic(), len(event_times_ms)))
            self._trim_recent()

    def _trim_recent(self) -> None:
        horizon = time.monotonic() - RATE_WINDOW_S
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def rate_1m(self) -> float:
        """Documents written per second over the last minute (or since start, if sooner)."""
        with self._recent_lock:
            self._trim_recent()
            written = sum(n for _, n in self._recent)
        return written / min(RATE_WINDOW_S, max(1e-6, time.time() - self.started))

    def lag(self, lags: dict[tuple[str, int], int]) -> None:
        self._last_lag = dict(lags)
        for (topic, partition), value in lags.items():
            self._lag.labels(self.replica, topic, str(partition)).set(value)

    def forget(self, partitions: list[tuple[str, int]]) -> None:
        """Drop the per-partition gauges of partitions this replica no longer owns (their new
        owner reports them; kept, dashboards would count a partition's lag twice)."""
        for topic, partition in partitions:
            self._last_lag.pop((topic, partition), None)
            for gauge in (self._lag, self._committed):
                try:
                    gauge.remove(self.replica, topic, str(partition))
                except KeyError:
                    pass  # never reported here

    def committed(self, offsets: dict[tuple[str, int], int]) -> None:
        for (topic, partition), value in offsets.items():
            self._committed.labels(self.replica, topic, str(partition)).set(value)

    def snapshot(self) -> dict:
        out: dict[str, Any] = dict(self.counts)
        out["padding_ratio"] = round(self._padded_tokens / self._real_tokens - 1, 4) if self._real_tokens else 0.0
        out["uptime_s"] = round(time.time() - self.started, 1)
        out["docs_per_s_1m"] = round(self.rate_1m(), 2)
        out["lag"] = sum(self._last_lag.values())
        out["encode_busy_s"] = round(self.busy_s["encode"], 3)
        out["sink_busy_s"] = round(self.busy_s["sink"], 3)
        return out
