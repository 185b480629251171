"""Backfills against the real local Ray, Redis, Kafka and Parquet."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.batch.backfill import BackfillJob
from pipelines.batch.replay import replay_topic
from pipelines.serving.search import Searcher
from tests.helpers import (
    committed_offsets,
    create_topic,
    doc,
    end_offsets,
    make_settings,
    produce,
    read_parquet,
    wait_until,
)
from workers.encoding.encoder import Encoder
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration
WORDS = ["서울", "경제", "금리", "반도체", "수출", "날씨", "태풍", "야구", "축구", "선거", "market", "chip", "rates", "storm", "election", "season"]


def write_corpus(folder: Path, n: int, seed: int = 0, bad_every: int = 0) -> dict[str, str]:
    """Two JSONL files with n valid documents (and a bad line every `bad_every`); returns id -> text."""
    rng = random.Random(seed)
    texts, lines = {}, [[], []]
    for i in range(n):
        doc_id = f"bf-{i:05d}"
        texts[doc_id] = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 90)))
        lines[i % 2].append(json.dumps({"id": doc_id, "text": texts[doc_id], "lang": "ko"}, ensure_ascii=False))
        if bad_every and i % bad_every == 0:
            lines[i % 2].append('{"id": "broken-' + str(i) + '", "text": ')
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(lines):
        (folder / f"part-{k}.jsonl").write_text("\n".join(part) + "\n", encoding="utf-8")
    return texts


def vcard(redis_client, settings, index):
    return sum(redis_client.execute_command("VCARD", k) for k in VectorSetIndex(
        settings.redis.key_prefix, index, settings.redis.shards).shard_keys())


def test_jsonl_backfill_indexes_exactly_the_valid_documents_like_streaming_would(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    texts = write_corpus(tmp_path / "input", 2000, bad_every=97)
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             workers={"replicas": 2, "num_cpus": 0.5})
    job = BackfillJob(settings, str(tmp_path / "input" / "*.jsonl"), target="v2", unit_mb=0.05)
    seen = []
    summary = job.run(on_unit=seen.append)
    assert summary["embedded"] == 2000 and summary["rejected"] == len([i for i in range(2000) if i % 97 == 0])
    assert len(seen) == summary["units"] > 4
    assert vcard(redis_client, settings, "v2") == 2000
    assert redis_client.get(f"{settings.redis.key_prefix}:current") == b"v2", "alias switched at the end"

    table = read_parquet(settings)
    assert table.num_rows == 2000 == len(set(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist())))
    assert set(table["id"].to_pylist()) == set(texts)
    rejects = [json.loads(line) for line in Path(summary["rejects_file"]).read_text().splitlines()]
    assert len(rejects) == summary["rejected"] and {r["code"] for r in rejects} == {"invalid_json"}

    encoder = Encoder.load(str(tiny_model_dir))
    sample = sorted(texts)[::97]
    streaming = encoder.encode_documents([texts[i] for i in sample])  # what the streaming worker computes
    by_id = {r["id"]: np.array(r["embedding"], dtype=np.float32) for r in table.select(["id", "embedding"]).to_pylist()}
    assert max(float(np.max(np.abs(by_id[i] - v))) for i, v in zip(sample, streaming)) < 1e-5

    searcher = Searcher(settings.model_copy(update={"redis": settings.redis.model_copy(update={"index": None})}),
                        encoder=encoder)
    searcher.setup()
    assert searcher.index.base.endswith(":v2"), "searches follow the alias"

    again = job.run()
    assert again["embedded"] == 2000 and vcard(redis_client, settings, "v2") == 2000
    assert read_parquet(settings).num_rows == 2000, "a second run writes nothing twice"

    parquet_input = tmp_path / "pq-input"
    parquet_input.mkdir()
    rows = [{"id": f"p{i}", "text": texts[k], "published_at": "2026-11-27T09:00:00+09:00"}
            for i, k in enumerate(sorted(texts)[:300])]
    pq.write_table(pa.Table.from_pylist(rows), parquet_input / "docs.parquet", row_group_size=100)
    from_parquet = BackfillJob(settings, str(parquet_input / "*.parquet"), target="v2").run()
    assert from_parquet["embedded"] == 300 and from_parquet["units"] == 3
    assert vcard(redis_client, settings, "v2") == 2300


def _backfill_cli(config: Path, pattern: str, state: Path, index: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli.main", "backfill", "-c", str(config), "--input", pattern,
            "--state-dir", str(state), "--target", index, "--unit-mb", "0.02", "--json"]


def test_killed_driver_then_rerun_gives_the_uninterrupted_result(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    texts = write_corpus(tmp_path / "input", 1200, seed=5, bad_every=250)
    pattern = str(tmp_path / "input" / "*.jsonl")
    base = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                         workers={"replicas": 1, "num_cpus": 1}).model_dump(mode="json")
    configs = {}
    for name in ("interrupted", "clean"):
        cfg = json.loads(json.dumps(base))
        cfg["parquet"]["path"] = str(tmp_path / name / "parquet")
        cfg["ray"] = {"num_cpus": 2}
        configs[name] = tmp_path / f"{name}.yaml"
        configs[name].write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "EMBEDWORKER_LOG_LEVEL": "WARNING"}

    state = tmp_path / "interrupted" / "state"
    proc = subprocess.Popen(_backfill_cli(configs["interrupted"], pattern, state, "killed"), env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(list(state.glob("*/units/*.json"))) >= 3, 180, interval=0.2,
                   message="three units done before the kill")
    finally:
        done_at_kill = len(list(state.glob("*/units/*.json")))
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait()
    assert done_at_kill >= 3, "the job was running when killed"
    total_units = len(BackfillJob(load(configs["interrupted"]), pattern, state_dir=str(state), unit_mb=0.02,
                                  target="killed").plan()[0])
    assert done_at_kill < total_units, "the job was killed before the end"

    out = subprocess.run(_backfill_cli(configs["interrupted"], pattern, state, "killed"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["embedded"] == 1200
    clean = BackfillJob(load(configs["clean"]), pattern, target="clean", unit_mb=0.02,
                        state_dir=str(tmp_path / "clean" / "state")).run()
    assert clean["embedded"] == 1200

    settings = load(configs["interrupted"])
    assert vcard(redis_client, settings, "killed") == vcard(redis_client, settings, "clean") == 1200
    tables = {}
    for name in ("interrupted", "clean"):
        table = read_parquet(load(configs[name])).sort_by([("id", "ascending")])
        keys = list(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
        assert table.num_rows == len(set(keys)) == 1200, f"{name}: nothing doubled"
        tables[name] = table
    assert tables["interrupted"]["id"].to_pylist() == tables["clean"]["id"].to_pylist()
    assert np.allclose(np.stack(tables["interrupted"]["embedding"].to_numpy(zero_copy_only=False)),
                       np.stack(tables["clean"]["embedding"].to_numpy(zero_copy_only=False)), atol=1e-6)
    k = VectorSetIndex(settings.redis.key_prefix, "killed", 1).base
    c = VectorSetIndex(settings.redis.key_prefix, "clean", 1).base
    for doc_id in sorted(texts)[::100]:
        a = np.array(redis_client.execute_command("VEMB", k, doc_id), dtype=np.float32)
        b = np.array(redis_client.execute_command("VEMB", c, doc_id), dtype=np.float32)
        assert np.allclose(a, b, atol=1e-6)


def load(path: Path):
    from pipelines.config import load_settings

    return load_settings(path)


def test_replay_stops_by_itself_at_the_end_offsets_captured_at_start(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    create_topic(settings, partitions=3)
    produce(settings, [doc(f"old-{i}", f"archived story number {i}") for i in range(300)])
    ends_at_start = end_offsets(settings)

    late = threading.Thread(target=lambda: (time.sleep(3), produce(settings, [doc(f"new-{i}", f"late story {i}")
                                                                               for i in range(100)])))
    late.start()
    summary = replay_topic(settings, settings.kafka.topic, target="replayed")
    late.join()
    assert summary["records"] == 300 and summary["end_offsets"] == ends_at_start
    assert vcard(redis_client, settings, "replayed") == 300
    assert not redis_client.execute_command("VISMEMBER", VectorSetIndex(settings.redis.key_prefix, "replayed", 1).base,
                                            "new-0")
    group = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"group_id": summary["group"]})})
    assert committed_offsets(group) == ends_at_start
    assert sum(end_offsets(settings).values()) == 400


def test_two_model_upgrades_in_a_row_each_replay_the_whole_topic(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    """Each replay has a consumer group of its own, so a second upgrade reads everything again
    (it used to resume from the first one's offsets, index nothing and still move the alias)."""
    from workers.sinks.vector_sets import alias_key

    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    create_topic(settings, partitions=3)
    produce(settings, [doc(f"d-{i}", f"story number {i}") for i in range(120)])
    for target in ("v1", "v2"):
        summary = replay_topic(settings, settings.kafka.topic, target=target)
        assert (summary["records"], summary["written"], summary["rejected"], summary["vectors"]) == (120, 120, 0, 120)
        assert vcard(redis_client, settings, target) == 120
        assert redis_client.get(alias_key(settings.redis)) == target.encode()
        copy = read_parquet(settings, index=target)
        assert copy.num_rows == 120 == len(set(zip(copy["kafka_partition"].to_pylist(),
                                                   copy["kafka_offset"].to_pylist()))), "a full Parquet copy per index"
        assert set(copy["id"].to_pylist()) == {f"d-{i}" for i in range(120)}
    assert vcard(redis_client, settings, "v1") == 120  # the old index stays until dropped
    assert read_parquet(settings).num_rows == 240 and read_parquet(settings, index="v1").num_rows == 120


def test_a_model_upgrade_re_embeds_from_the_lake_after_kafka_forgot(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    """The lake keeps the text: a second model re-embeds the newest documents of the first
    model's index from the table (an update and a deletion included), into a new index, without
    the topic; the alias moves when it is complete; a second run embeds nothing again."""
    from tests.support.models import make_random_model
    from workers.sinks.vector_sets import alias_key

    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique, redis={"index": "v1"})
    create_topic(settings, partitions=2)
    produce(settings, [doc(f"d-{i}", f"기사 {i} story", title=f"title {i}") for i in range(80)]
            + [doc("d-7", "기사 7 updated", title="title 7 v2"), (b"d-9", b'{"id": "d-9", "op": "delete"}')])
    replay_topic(settings, settings.kafka.topic)
    assert read_parquet(settings, index="v1").num_rows == 82

    other = make_random_model(tmp_path / "model-b", seed=11)
    upgraded = make_settings(kafka_bootstrap, redis_url, other, tmp_path, unique)
    lake_path = settings.parquet.path
    first = BackfillJob(upgraded, lake_path, target="v2").run()
    assert (first["embedded"], first["deleted"], first["rejected"]) == (79, 1, 0)
    assert vcard(redis_client, upgraded, "v2") == 79
    assert redis_client.get(alias_key(upgraded.redis)) == b"v2"
    v2 = read_parquet(upgraded, index="v2")
    upserts = v2.filter(pc.equal(v2["op"], "upsert"))
    assert set(upserts["id"].to_pylist()) == {f"d-{i}" for i in range(80)} - {"d-9"}
    assert "기사 7 updated" in upserts["text"].to_pylist() and set(upserts["model"].to_pylist()) == {str(other)}
    again = BackfillJob(upgraded, lake_path, target="v2").run()
    assert again["embedded"] == 79 and read_parquet(upgraded, index="v2").num_rows == v2.num_rows
