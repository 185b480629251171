"""`embedworker dlq show | redrive` against a real broker and a worker: the hostile corpus
dead-lettered, shown, re-driven unchanged (the same reasons come back, once), then re-driven after
a config change that accepts one (indexed once); a second run re-drives nothing twice."""

from collections import Counter

import pytest
import yaml

from pipelines.cli.main import main
from pipelines.ops.dlq import redrive, show
from tests.helpers import (
    WorkerThread,
    all_committed,
    create_topic,
    doc,
    make_settings,
    produce,
    read_parquet,
    wait_until,
)
from tests.hostile import bad_records
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration


def consume_all(settings) -> None:
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=120, message="everything committed")
    finally:
        worker.stop()


def test_show_and_redrive_the_hostile_corpus(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                                             redis_client, capsys):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    # near-broker-max is bad only at its full size (3.9 MB); at 300 KB it is a valid document
    bad = [b for b in bad_records(near_broker_max=300_000) if b[0] not in ("deeply-nested-json", "near-broker-max")]
    create_topic(settings, partitions=3)
    produce(settings, [doc(f"ok-{i}", f"valid document {i}") for i in range(20)] + [(k, v) for _, k, v, _ in bad])
    consume_all(settings)

    shown = show(settings, limit=5)
    expected = Counter(code for *_, code in bad)
    assert shown["total"] == len(bad) and shown["by_reason"] == dict(expected)
    assert sum(shown["by_source_partition"].values()) == len(bad) and len(shown["records"]) == 5
    assert main(["dlq", "show", "-c", str(write_config(settings, tmp_path)), "--reason", "too_large"]) == 0
    assert "too_large" in capsys.readouterr().out

    # nothing fixed: every record comes back to the DLQ once, with the same reason, marked
    first = redrive(settings)
    assert first["redriven"] == len(bad) and first["truncated_not_redriven"] == 0
    assert redrive(settings)["redriven"] == 0, "a second run re-drives nothing twice"
    consume_all(settings)
    again = show(settings, limit=10_000)
    assert again["by_reason"] == {code: 2 * n for code, n in expected.items()}
    copies = [r for r in again["records"] if r["redriven_from"]]
    assert len(copies) == len(bad), "the copies name the DLQ record they came from"
    assert {r["redriven_from"] for r in copies} == {f"{again['topic']}:{r['dlq_partition']}:{r['dlq_offset']}"
                                                   for r in again["records"] if not r["redriven_from"]}

    # a larger text limit accepts the oversized texts: their copies, re-driven, are indexed once
    relaxed = settings.model_copy(update={"documents": settings.documents.model_copy(
        update={"max_text_bytes": 8 * 1024 * 1024})})
    dry = redrive(relaxed, reason="too_large", dry_run=True)
    third = redrive(relaxed, reason="too_large")
    assert dry["redriven"] == third["redriven"] == expected["too_large"] == third["copies"]
    consume_all(relaxed)
    vindex = VectorSetIndex.stored(redis_client, settings.redis, "tiny-bert")
    assert redis_client.execute_command("VISMEMBER", vindex.key_for("big"), "big") == 1
    assert read_parquet(settings)["id"].to_pylist().count("big") == 1, "indexed once"
    final = show(settings, limit=0)["by_reason"]
    assert final["too_large"] == 3 * expected["too_large"] - 1, "the others came back, with the same reason"
    assert redrive(relaxed, reason="invalid_json", dry_run=True)["redriven"] == expected["invalid_json"]


def write_config(settings, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    return path
