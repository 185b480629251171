"""The driver's side of elastic replicas: measure, decide (pipelines/stream/autoscaler.py), act, show.

A measuring thread reads the topic's end offsets and the group's committed offsets from Kafka and
every replica's stats, once per `workers.autoscale.interval_s`; the supervise loop takes the
newest measurement (`tick`), asks the autoscaler, and adds or drains replicas. A Kafka outage only
delays decisions: each failed measurement is counted (`embedworker_autoscale_errors_total`) and
logged once a minute, and the next interval tries again.

Visible as: `embedworker_replicas{state="desired|running|starting|draining"}`, the changes by
direction and cause, a log line per change ("scaling 1 → 3: lag 2,400, ..."), and in `status`
(every replica reports the group's scaling state it was last told).
"""

from __future__ import annotations

import logging
import threading
import time

import ray
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pipelines.stream.autoscaler import Observation, ReplicaAutoscaler
from workers.kafka.clients import kafka_error_message, new_admin
from workers.kafka.offsets import group_offsets, total_lag

log = logging.getLogger("embedworker.scaling")


class SupervisorMetrics:
    """The driver's metrics (served on `workers.supervisor_metrics_port` when set)."""

    def __init__(self):
        reg = self.registry = CollectorRegistry()
        self.replicas = Gauge("embedworker_replicas", "Replicas by state: desired (autoscaler or workers.replicas), "
                              "running, starting, draining", ["state"], registry=reg)
        self.changes = Counter("embedworker_replica_changes",
                               "Replica count changes by direction (up, down) and cause (backlog, idle, bounds)",
                               ["direction", "cause"], registry=reg)
        self.rate_per_replica = Gauge("embedworker_autoscale_rate_per_replica",
                                      "Documents per second one replica processes when busy", registry=reg)
        self.input_rate = Gauge("embedworker_autoscale_input_rate",
                                "Records per second produced to the topic (last minute)", registry=reg)
        self.errors = Counter("embedworker_autoscale_errors",
                              "Autoscaling measurements that failed, by error (decisions wait; tried again)",
                              ["error"], registry=reg)


class ReplicaScaling:
    def __init__(self, supervisor):
        self.supervisor = supervisor
        self.settings = supervisor.settings.workers.autoscale
        self.metrics = SupervisorMetrics()
        self.autoscaler: ReplicaAutoscaler | None = None
        self.last_change = "none yet"
        self._latest: Observation | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_error = 0.0
        self._told: tuple | None = None  # the state the replicas were last told

    def setup(self) -> None:
        """Called once the first replicas run: serve the metrics, start measuring (autoscaling)."""
        port = self.supervisor.settings.workers.supervisor_metrics_port
        if port is not None:
            start_http_server(port, registry=self.metrics.registry)
        if self.settings.enabled:
            self.autoscaler = ReplicaAutoscaler(self.settings, time.monotonic())
            self._thread = threading.Thread(target=self._measure_loop, name="autoscale-measure", daemon=True)
            self._thread.start()
        self._publish()

    @property
    def desired(self) -> int:
        a = self.autoscaler
        return a.desired if a is not None and a.desired is not None else self.supervisor.target

    def tick(self) -> None:
        """From the supervise loop: act on the newest measurement (if a new one came)."""
        with self._lock:
            obs, self._latest = self._latest, None
        if obs is not None and self.autoscaler is not None:
            decision = self.autoscaler.observe(obs, self.supervisor.running)
            self.metrics.rate_per_replica.set(self.autoscaler.rate_per_replica or 0)
            self.metrics.input_rate.set(self.autoscaler.input_rate)
            if decision is not None:
                log.info("%s", decision)
                self.last_change = str(decision)
                direction = "up" if decision.replicas > decision.previous else "down"
                self.metrics.changes.labels(direction, decision.cause).inc()
                self.supervisor.scale_to(decision.replicas)
                self.supervisor._apply_requested()
        self._publish()

    def state(self) -> dict:
        """The group's scaling state, as `status` shows it."""
        s = self.supervisor
        draining = len(s._draining)
        return {"desired": self.desired, "running": s.running - len(s._setups), "starting": len(s._setups),
                "draining": draining, "autoscale": self.settings.enabled, "last_change": self.last_change,
                "reason": self.autoscaler.last_reason if self.autoscaler else "workers.replicas (autoscale off)",
                "at": time.time()}

    def _publish(self) -> None:
        """The gauges, and (when the set changed) the state told to every replica for `status`."""
        state = self.state()
        for name in ("desired", "running", "starting", "draining"):
            self.metrics.replicas.labels(name).set(state[name])
        told = tuple(state[k] for k in ("desired", "running", "starting", "draining", "last_change"))
        if told != self._told:
            self._told = told
            for actor in list(self.supervisor.actors.values()):
                actor.set_scaling.remote(state)

    def _measure_loop(self) -> None:
        k = self.supervisor.settings.kafka
        admin = None
        while not self._closed.wait(self.settings.interval_s):
            try:
                if admin is None:
                    admin = new_admin(k, "autoscale", request_timeout_ms=min(k.request_timeout_ms, 10000))
                ends, committed = group_offsets(admin, k)
                obs = Observation(time.monotonic(), sum(ends.values()), total_lag(ends, committed), len(ends),
                                  self.supervisor.stats(timeout=min(5.0, self.settings.interval_s)))
                with self._lock:
                    self._latest = obs
            except (KafkaError, ray.exceptions.RayError) as exc:
                self.metrics.errors.labels(type(exc).__name__).inc()
                if time.monotonic() - self._logged_error >= 60:
                    self._logged_error = time.monotonic()
                    message = kafka_error_message(exc, k) if isinstance(exc, KafkaError) else str(exc)
                    log.warning("autoscaling could not measure (decisions wait; tried again every %g s): %s",
                                self.settings.interval_s, message)
                if admin is not None and isinstance(exc, KafkaError):
                    admin.close()
                    admin = None
        if admin is not None:
            admin.close()

    def close(self) -> None:
        """From stop(): no more measurements; the gauges say nothing runs."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        for name in ("desired", "running", "starting", "draining"):
            self.metrics.replicas.labels(name).set(0)
