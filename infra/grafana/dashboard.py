"""Writes embedworker.json, the Grafana dashboard (run it after changing a panel; the JSON is
what Grafana provisions). Every expression names only metrics the worker exports (checked by
tests/unit/test_dashboard.py against the worker's and the supervisor's registries) or Ray's own (`ray_*`).

    python infra/grafana/dashboard.py        # rewrites infra/grafana/embedworker.json
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WINDOW = "$__rate_interval"

# (title, unit, [(legend, PromQL)], kind, width): kind "timeseries" or "stat"
PANELS = [
    ("Throughput: consumed, embedded, written", "docs/s", [
        ("consumed", f"sum(rate(embedworker_records_consumed_total[{WINDOW}]))"),
        ("embedded", f"sum(rate(embedworker_documents_embedded_total[{WINDOW}]))"),
        ("written ({{sink}})", f"sum by (sink) (rate(embedworker_records_written_total[{WINDOW}]))"),
    ], "timeseries", 12),
    ("Rejected to the DLQ, by reason", "records/s", [
        ("{{reason}}", f"sum by (reason) (rate(embedworker_records_rejected_total[{WINDOW}]))"),
    ], "timeseries", 12),
    ("Consumer lag per partition", "records", [
        ("{{topic}}:{{partition}}", "sum by (topic, partition) (embedworker_consumer_lag)"),
    ], "timeseries", 12),
    ("End-to-end latency (Kafka timestamp to written)", "s", [
        (f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate(embedworker_end_to_end_latency_seconds_bucket[{WINDOW}])))")
        for q in (50, 95, 99)
    ], "timeseries", 12),
    ("Batch fill: texts and padded tokens per batch", "short", [
        ("texts per batch", f"sum(rate(embedworker_batch_size_sum[{WINDOW}])) / sum(rate(embedworker_batch_size_count[{WINDOW}]))"),
        ("padded tokens per batch / 100", f"sum(rate(embedworker_batch_padded_tokens_sum[{WINDOW}])) / sum(rate(embedworker_batch_padded_tokens_count[{WINDOW}])) / 100"),
    ], "timeseries", 8),
    ("Padding ratio (padded / real tokens - 1)", "percentunit", [
        ("replica {{replica}}", "embedworker_padding_ratio"),
    ], "timeseries", 8),
    ("Encode and sink seconds (p95)", "s", [
        ("encode", f"histogram_quantile(0.95, sum by (le) (rate(embedworker_encode_seconds_bucket[{WINDOW}])))"),
        ("sink {{sink}}", f"histogram_quantile(0.95, sum by (le, sink) (rate(embedworker_sink_write_seconds_bucket[{WINDOW}])))"),
    ], "timeseries", 8),
    ("In flight and paused", "short", [
        ("in flight, replica {{replica}}", "embedworker_in_flight_documents"),
        ("paused, replica {{replica}}", "embedworker_paused"),
    ], "timeseries", 8),
    ("Failures: sink retries, poll errors, DLQ unacknowledged", "short", [
        ("sink {{sink}} retries/s", f"sum by (sink) (rate(embedworker_sink_errors_total[{WINDOW}]))"),
        ("poll {{error}}/s", f"sum by (error) (rate(embedworker_source_errors_total[{WINDOW}]))"),
        ("DLQ unacked", "sum(embedworker_dlq_unacked)"),
    ], "timeseries", 8),
    ("GPU memory per replica", "bytes", [
        ("replica {{replica}}", "embedworker_gpu_memory_bytes"),
    ], "timeseries", 8),
    ("Replicas reporting", "short", [
        ("replicas", "count(embedworker_paused)"),
    ], "stat", 8),
    ("Ray actors by state (restarts show as RESTARTING)", "short", [
        ("{{State}}", "sum by (State) (ray_actors)"),
    ], "timeseries", 16),
    ("Replicas: desired and running (autoscaling)", "short", [
        ("{{state}}", "max by (state) (embedworker_replicas)"),
    ], "timeseries", 12),
    ("Autoscaling: input rate, rate per replica, changes", "short", [
        ("produced/s", "max(embedworker_autoscale_input_rate)"),
        ("docs/s per replica (busy)", "max(embedworker_autoscale_rate_per_replica)"),
        ("changes {{direction}} ({{cause}}) / h", "sum by (direction, cause) (increase(embedworker_replica_changes_total[1h]))"),
    ], "timeseries", 12),
    ("Retention: oldest vector kept, vectors expired and too old on arrival", "short", [
        ("oldest vector age, days ({{index}})", "max by (index) (embedworker_oldest_vector_age_seconds) / 86400"),
        ("expired / h ({{index}})", "sum by (index) (increase(embedworker_vectors_expired_total[1h]))"),
        ("too old on arrival / h", "sum(increase(embedworker_documents_too_old_total[1h]))"),
    ], "timeseries", 24),
    ("Query service: requests by route and status code", "req/s", [
        ("{{route}} {{code}}", f"sum by (route, code) (rate(embedworker_serve_requests_total[{WINDOW}]))"),
    ], "timeseries", 8),
    ("Query service: latency (p50, p99) and requests per batch", "s", [
        (f"p{q} {{{{route}}}}", f"histogram_quantile(0.{q}, sum by (le, route) (rate(embedworker_serve_request_seconds_bucket[{WINDOW}])))")
        for q in (50, 99)
    ] + [("requests per batch", f"sum(rate(embedworker_serve_batch_requests_sum[{WINDOW}])) / sum(rate(embedworker_serve_batch_requests_count[{WINDOW}]))")],
     "timeseries", 8),
    ("Query service: errors by code, replicas", "short", [
        ("{{error}}/s ({{route}})", f"sum by (error, route) (rate(embedworker_serve_errors_total[{WINDOW}]))"),
        ("replicas", "max(embedworker_serve_replicas)"),
    ], "timeseries", 8),
]


def panel(i: int, x: int, y: int, title: str, unit: str, targets, kind: str, width: int) -> dict:
    return {"id": i + 1, "type": kind, "title": title, "datasource": DATASOURCE,
            "gridPos": {"x": x, "y": y, "w": width, "h": 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
            "targets": [{"refId": chr(65 + j), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
                        for j, (legend, expr) in enumerate(targets)]}


def dashboard() -> dict:
    panels, x, y = [], 0, 0
    for i, (title, unit, targets, kind, width) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(i, x, y, title, unit, targets, kind, width))
        x += width
    return {"uid": "embedworker", "title": "embedworker", "tags": ["embedworker", "kafka", "ray"],
            "timezone": "browser", "schemaVersion": 39, "version": 1, "refresh": "10s",
            "time": {"from": "now-30m", "to": "now"},
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                     "label": "Prometheus"}]},
            "panels": panels}


if __name__ == "__main__":
    out = Path(__file__).with_name("embedworker.json")
    out.write_text(json.dumps(dashboard(), indent=1) + "\n")
    print(f"wrote {out} ({len(PANELS)} panels)")
