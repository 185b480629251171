"""Operations against the real thing: the Prometheus endpoint of a running replica (scraped and
parsed), and `embedworker status` reading a real consumer group, real replicas through Ray and a
lag that grows while nothing consumes."""

import threading
import time
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pipelines.cli.main import main
from pipelines.ops.status import collect_status
from pipelines.serving.ingress import free_port
from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import all_committed, create_topic, doc, end_offsets, make_settings, produce, wait_until

pytestmark = pytest.mark.integration



def scrape(port: int) -> dict:
    """{(name, frozenset(labels)): value} from the endpoint, parsed by prometheus_client."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    want = {k: str(v) for k, v in labels.items()}
    found = [v for (n, ls), v in samples.items() if n == name and want.items() <= dict(ls).items()]
    assert found, f"{name} {labels} not exported"
    return sum(found)


def lag_samples(samples: dict) -> list[float]:
    return [v for (n, ls), v in sorted(samples.items(), key=str) if n == "embedworker_consumer_lag"]


def test_metrics_are_scraped_and_status_reports_group_replicas_and_lag(
        ray_cluster, kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique, capsys):
    port = free_port()
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             workers={"replicas": 1, "num_gpus": 0, "num_cpus": 0.5, "metrics_port": port})
    create_topic(settings, partitions=2)
    records = [doc(f"m{i}", f"뉴스 기사 본문 {i} market report number {i} " * (1 + i % 7)) for i in range(200)]
    records += [(b"bad-1", b"{not json"), (b"bad-2", b'{"id": "x"}')]
    produce(settings, records)
    supervisor = StreamSupervisor(settings)
    supervisor.start()
    try:
        wait_until(lambda: all_committed(settings), timeout=120, message="every offset committed")
        ends = end_offsets(settings)
        wait_until(lambda: lag_samples(scrape(port)) == [0, 0], timeout=20, message="lag 0 on the endpoint")
        m = scrape(port)
        assert value(m, "embedworker_records_consumed_total", replica=0, topic=settings.kafka.topic) == 202
        assert value(m, "embedworker_documents_embedded_total", replica=0) == 200
        assert value(m, "embedworker_records_rejected_total", replica=0) == 2
        assert value(m, "embedworker_records_rejected_total", reason="invalid_json") == 1
        assert value(m, "embedworker_records_written_total", sink="redis") == 200
        assert value(m, "embedworker_records_written_total", sink="parquet") == 200
        assert value(m, "embedworker_end_to_end_latency_seconds_count", replica=0) == 200
        assert 0 < value(m, "embedworker_end_to_end_latency_seconds_sum", replica=0) < 200 * 120
        assert value(m, "embedworker_batch_size_sum", replica=0) == 200
        assert value(m, "embedworker_batch_padded_tokens_count", replica=0) >= 1
        assert value(m, "embedworker_encode_seconds_count", replica=0) == value(m, "embedworker_batch_size_count")
        assert value(m, "embedworker_sink_write_seconds_count", sink="redis") >= 1
        assert value(m, "embedworker_padding_ratio", replica=0) >= 0
        assert value(m, "embedworker_in_flight_documents", replica=0) == 0
        for p, end in ends.items():
            assert value(m, "embedworker_committed_offset", partition=p) == end

        report = collect_status(settings, window_s=1.0, actors=True)
        k = report["kafka"]
        assert [mb["client_id"] for mb in k["members"]] == ["embedworker-0"]
        assert sorted(k["members"][0]["partitions"]) == [0, 1]
        assert k["total_lag"] == 0 and k["lag_growth"] == 0 and k["dlq_records"] == 2
        actors = report["actors"]["actors"]
        assert [(a["replica"], a["up"], a["state"]) for a in actors] == [(0, True, "running")]
        assert actors[0]["docs_per_s_1m"] > 0 and actors[0]["written"] == 200
        assert report["redis"]["total_vectors"] == 200 and report["parquet"]["rows"] == 200
        assert report["problems"] == []
    finally:
        supervisor.stop()

    # Nothing consumes now: a growing lag and a missing replica make the health check fail.
    more = [doc(f"late{i}", f"late story {i}") for i in range(60)]
    producer = threading.Thread(target=lambda: [produce(settings, more[i:i + 10]) or time.sleep(0.3)
                                                for i in range(0, 60, 10)])
    producer.start()
    report = collect_status(settings, window_s=1.5)
    producer.join()
    assert report["kafka"]["lag_growth"] > 0 and report["kafka"]["members"] == []
    assert any("lag grew" in p for p in report["problems"])
    assert any("0 of 1 replica(s)" in p for p in report["problems"])

    config = tmp_path / "status.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    assert main(["status", "-c", str(config), "--window", "0", "--no-actors", "--json"]) == 3
    # `status --watch` refreshes the same report in place and exits with the last one's code.
    capsys.readouterr()
    assert main(["status", "-c", str(config), "--no-actors", "--watch", "--interval", "0.3", "--count", "2"]) == 3
    shown = capsys.readouterr().out
    assert "status --watch, every 0.3 s" in shown and "unhealthy: 0 of 1 replica(s)" in shown
