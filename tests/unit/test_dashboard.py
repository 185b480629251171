"""The Grafana dashboard names only metrics (and labels) the worker and the supervisor export, and is what
infra/grafana/dashboard.py writes."""

import json
import re
import runpy
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pipelines.config import load_settings
from pipelines.maintenance.retention_sweep import RetentionSweeper
from pipelines.serving.metrics import MetricsSum, ServeMetrics
from pipelines.stream.scaling import SupervisorMetrics
from workers.stream.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "infra" / "grafana" / "embedworker.json"
RAY_METRICS = {"ray_actors"}


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, from a registry whose every metric has been used once."""
    m = WorkerMetrics(0)
    m.consumed("news", 3)
    m.embedded(2)
    m.deleted(1)
    m.rejected("invalid_json")
    m.observe_batch(4, 100, 128, 0.01)
    m.sink_write("redis", 2, 0.002)
    m.written([1_764_000_000_000], 1_764_000_001.0)
    m.lag({("news", 0): 5})
    m.committed({("news", 0): 10})
    m.sink_error("redis")
    m.source_error("KafkaConnectionError")
    m.in_flight.set(1)
    m.paused.set(0)
    m.dlq_unacked.set(0)
    m.gpu_memory.set(0)
    supervisor = SupervisorMetrics()
    supervisor.replicas.labels("desired").set(3)
    supervisor.changes.labels("up", "backlog").inc()
    supervisor.rate_per_replica.set(40)
    supervisor.input_rate.set(12)
    supervisor.errors.labels("KafkaTimeoutError").inc()
    sweeper = RetentionSweeper(load_settings(None, {"redis": {"retention": "30d"}}), supervisor.registry)
    sweeper.expired.inc()
    sweeper.oldest_age.set(86400)
    sweeper.errors.inc()
    m.too_old(1)
    serve = ServeMetrics()
    serve.answered("/search", 400, 0.01, "invalid_k")
    serve.batch_requests.observe(3)
    serve.batch_inputs.observe(5)
    serve.inputs.labels("query").inc()
    serve.tokens.inc()
    store = MetricsSum()  # what the ServeMetricsStore actor runs
    store.push("r1", serve.snapshot())
    summed = list(text_string_to_metric_families(store.render().decode()))
    out: dict[str, set[str]] = {}
    for family in [*m.registry.collect(), *supervisor.registry.collect(), *summed]:
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def expressions() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def test_every_expression_names_an_exported_metric_and_its_labels():
    names = exported()
    assert len(json.loads(DASHBOARD.read_text())["panels"]) >= 8
    for expr in expressions():
        metrics = set(re.findall(r"\b((?:embedworker|ray)_[a-z0-9_]+)\b", expr))
        assert metrics, expr
        for metric in metrics:
            assert metric in names or metric in RAY_METRICS, f"{metric} is not exported ({expr})"
        labels = set().union(*(names.get(x, set()) for x in metrics)) | {"le"}
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels or metrics <= RAY_METRICS, f"label {label!r} not on {metrics} ({expr})"


def test_the_json_is_what_the_generator_writes():
    generated = runpy.run_path(str(ROOT / "infra" / "grafana" / "dashboard.py"))["dashboard"]()
    assert json.loads(DASHBOARD.read_text()) == generated, "run python infra/grafana/dashboard.py"
