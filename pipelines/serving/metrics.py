"""The query service's Prometheus metrics, summed over its replicas.

Each replica counts into its own registry (`ServeMetrics`); every `PUSH_INTERVAL_S` it sends a
snapshot to one named actor per application (`ServeMetricsStore`), which keeps the latest
snapshot of every replica it ever heard from and answers `GET /metrics` with their sum: one
scrape of the service sees all its replicas, and counters of a replica that was scaled down stay
in the sum (they never go backwards). Samples are summed as they are: counters, histogram
buckets, sums and counts are all additive. `embedworker_serve_replicas` counts the replicas
heard from in the last 10 s.
"""

from __future__ import annotations

import time
from collections import defaultdict

import ray
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import Metric

PUSH_INTERVAL_S = 2.0
ALIVE_S = 10.0
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServeMetrics:
    """One replica's counts. Called from the request handlers (any thread)."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("embedworker_serve_requests", "HTTP requests answered, by route and status code",
                                ["route", "code"], registry=r)
        self.errors = Counter("embedworker_serve_errors", "requests answered with an error, by route and error code",
                              ["route", "error"], registry=r)
        self.latency = Histogram("embedworker_serve_request_seconds", "time from a request's arrival in the replica "
                                 "to its answer, by route", ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_requests = Histogram("embedworker_serve_batch_requests", "requests embedded together in one batch",
                                        buckets=BATCH_BUCKETS, registry=r)
        self.batch_inputs = Histogram("embedworker_serve_batch_inputs", "texts embedded together in one batch",
                                      buckets=BATCH_BUCKETS, registry=r)
        self.inputs = Counter("embedworker_serve_inputs", "texts embedded, by input type", ["input_type"], registry=r)
        self.tokens = Counter("embedworker_serve_tokens", "tokens embedded (the usage reported to clients)", registry=r)
        self.lexical_refreshes = Counter("embedworker_serve_lexical_refreshes", "reads of the lake by the replicas' "
                                         "lexical indexes, by index and result (ok, failed: the lake did not answer)",
                                         ["index", "result"], registry=r)
        self._last_push = 0.0

    def answered(self, route: str, code: int, seconds: float, error: str | None = None) -> None:
        self.requests.labels(route, str(code)).inc()
        self.latency.labels(route).observe(seconds)
        if error:
            self.errors.labels(route, error).inc()

    def snapshot(self) -> list[Metric]:
        return list(self.registry.collect())

    def push_due(self) -> bool:
        now = time.monotonic()
        if now - self._last_push < PUSH_INTERVAL_S:
            return False
        self._last_push = now
        return True


class MetricsSum:
    """The latest snapshot of every replica of one application; its sum in Prometheus text.
    Runs as the actor `ServeMetricsStore`."""

    def __init__(self):
        self._snapshots: dict[str, tuple[float, list[Metric]]] = {}

    def push(self, replica: str, families: list[Metric]) -> None:
        self._snapshots[replica] = (time.monotonic(), families)

    def render(self) -> bytes:
        merged: dict[str, Metric] = {}
        sums: dict[str, dict[tuple, float]] = defaultdict(lambda: defaultdict(float))
        for _, families in self._snapshots.values():
            for family in families:
                merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                for sample in family.samples:
                    if sample.name.endswith("_created"):
                        continue
                    sums[family.name][(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
        for name, samples in sums.items():
            for (sample_name, labels), value in samples.items():
                merged[name].add_sample(sample_name, dict(labels), value)
        alive = sum(1 for at, _ in self._snapshots.values() if time.monotonic() - at < ALIVE_S)
        replicas = Metric("embedworker_serve_replicas", "replicas that reported in the last 10 s", "gauge")
        replicas.add_sample("embedworker_serve_replicas", {}, alive)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families([*merged.values(), replicas]))
        return generate_latest(registry)


ServeMetricsStore = ray.remote(num_cpus=0, max_restarts=-1)(MetricsSum)


class _Families:
    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self):
        return self.families


def metrics_store(app_name: str):
    """The application's store (created by the first replica that asks; lives with the cluster)."""
    return ServeMetricsStore.options(name=f"embedworker:serve-metrics:{app_name}", get_if_exists=True,
                                     lifetime="detached").remote()
