"""The streaming worker against real Kafka, Redis and Parquet (and Ray for the multi-actor run)."""

import json
import random
from datetime import UTC, datetime

import numpy as np
import pyarrow.compute as pc
import pytest

from pipelines.serving.search import Searcher
from pipelines.stream.supervisor import StreamSupervisor
from tests.helpers import (
    WorkerThread,
    all_committed,
    committed_offsets,
    create_topic,
    doc,
    end_offsets,
    header,
    make_settings,
    parquet_metadata,
    produce,
    read_dlq,
    read_parquet,
    wait_until,
)
from tests.hostile import bad_records
from workers.encoding.encoder import Encoder
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration

NEWS_WORDS = ["정부", "금리", "인상", "발표", "시장", "반응", "서울", "부동산", "가격", "상승", "수출", "반도체", "회복", "경기", "전망", "기업", "실적", "market", "rates", "inflation", "election", "court", "police", "weather", "storm", "typhoon", "team", "final", "season"]


def news_text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(NEWS_WORDS) for _ in range(n_words))


def vector_of(redis_client, key: str, element: str) -> np.ndarray:
    return np.array([float(x) for x in redis_client.execute_command("VEMB", key, element)], dtype=np.float32)


def test_two_actors_three_partitions_valid_docs_indexed_once_bad_ones_in_the_dlq(
        ray_cluster, kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             workers={"replicas": 2, "num_gpus": 0, "num_cpus": 0.5})
    create_topic(settings, partitions=3)
    rng = random.Random(1)
    bad = [b for b in bad_records(near_broker_max=1_200_000) if b[0] != "deeply-nested-json"][:30]
    valid = {f"doc-{i:04d}": (f"Title {i}", news_text(rng, rng.randint(5, 120))) for i in range(570)}
    records = [doc(i, text, title=title, lang="ko" if n % 2 else "en", published_at="2026-11-27T09:00:00+09:00")
               for n, (i, (title, text)) in enumerate(valid.items())]
    for j, (_name, key, value, _) in enumerate(bad):
        records.insert(j * 19 + 3, (key, value))
    produce(settings, records)

    supervisor = StreamSupervisor(settings)
    supervisor.start()
    try:
        wait_until(lambda: all_committed(settings), timeout=180, message="every offset committed")
    finally:
        results = supervisor.stop()
    assert all(r["state"] == "stopped" for r in results), results

    index = VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1)
    key = index.base
    assert redis_client.execute_command("VCARD", key) == len(valid)
    pipe = redis_client.pipeline(transaction=False)
    for i in valid:
        pipe.execute_command("VISMEMBER", key, i)
    assert all(pipe.execute())

    table = read_parquet(settings)
    pairs = set(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
    assert table.num_rows == len(valid) == len(pairs), "every valid record exactly once"
    assert set(table["id"].to_pylist()) == set(valid)

    dlq = read_dlq(settings, expected=len(bad))
    # At least once: a record rejected just before its partition moved to the other actor may be
    # rejected again there; the source headers tell the copies apart.
    sources = {(header(r, "embedworker.source.partition"), header(r, "embedworker.source.offset")) for r in dlq}
    assert len(sources) == len(bad) and {r.key for r in dlq} == {key for _, key, _, _ in bad}
    expected = {key: (code, value) for _, key, value, code in bad}
    for rec in dlq:
        code, value = expected[rec.key]
        assert header(rec, "embedworker.error.code") == code
        assert header(rec, "embedworker.error.message")
        assert header(rec, "embedworker.source.topic") == settings.kafka.topic
        assert int(header(rec, "embedworker.source.offset")) >= 0
        if header(rec, "embedworker.value_truncated") is None:
            assert rec.value == value

    assert committed_offsets(settings) == end_offsets(settings)

    encoder = Encoder.load(str(tiny_model_dir))
    sample = sorted(valid)[:40]
    expected_vectors = encoder.encode_documents([f"{valid[i][0]}\n{valid[i][1]}" for i in sample])
    by_id = {r["id"]: r["embedding"] for r in table.select(["id", "embedding"]).to_pylist()}
    for i, vec in zip(sample, expected_vectors):
        assert np.max(np.abs(np.array(by_id[i], dtype=np.float32) - vec)) < 1e-5
        assert np.max(np.abs(vector_of(redis_client, key, i) - vec)) < 1e-5
    attrs = json.loads(redis_client.execute_command("VGETATTR", key, sample[0]))
    assert attrs["title"] == valid[sample[0]][0]
    assert attrs["published_at"] == int(datetime(2026, 11, 27, tzinfo=UTC).timestamp())


def test_upserts_overwrite_and_deletes_remove(kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    create_topic(settings, partitions=1)
    produce(settings, [doc("a", "first text of a", title="v1"), doc("b", "text of b"),
                       doc("a", "second text of a", title="v2"), doc("c", "text of c"),
                       (b"b", json.dumps({"id": "b", "op": "delete"}).encode())])
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=90, message="commit")
    finally:
        worker.stop()
    key = VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1).base
    assert redis_client.execute_command("VCARD", key) == 2
    assert not redis_client.execute_command("VISMEMBER", key, "b")
    assert json.loads(redis_client.execute_command("VGETATTR", key, "a"))["title"] == "v2"
    encoder = Encoder.load(str(tiny_model_dir))
    assert np.max(np.abs(vector_of(redis_client, key, "a") - encoder.encode_documents(["v2\nsecond text of a"])[0])) < 1e-5

    table = read_parquet(settings).sort_by("kafka_offset")
    assert table["id"].to_pylist() == ["a", "b", "a", "c", "b"]
    assert table["op"].to_pylist() == ["upsert", "upsert", "upsert", "upsert", "delete"]
    assert table["embedding"].is_null().to_pylist() == [False, False, False, False, True]
    meta = parquet_metadata(settings)
    assert meta["embedworker.dim"] == "32" and meta["embedworker.normalization"] == "l2"


def test_chunked_documents_and_sharded_keys_with_a_merged_search(
        kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             model={"document_prefix": "", "query_prefix": "", "max_tokens": 64,
                                    "chunking": {"enabled": True, "overlap": 8}},
                             redis={"shards": 4})
    create_topic(settings, partitions=2)
    rng = random.Random(7)
    short = {f"s{i}": news_text(rng, 8) + f" {i}" for i in range(40)}
    long_text = " ".join(f"word{i}" for i in range(400))
    produce(settings, [doc(k, v) for k, v in short.items()] + [doc("L", long_text)])
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=90, message="commit")
        index = VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 4)
        counts = [redis_client.execute_command("VCARD", k) for k in index.shard_keys()]
        assert sum(1 for c in counts if c) >= 3, f"ids spread over the shards: {counts}"
        long_key = index.key_for("L")
        chunks = json.loads(redis_client.execute_command("VGETATTR", long_key, "L#0"))["chunks"]
        assert chunks >= 5 and sum(counts) == len(short) + chunks
        assert all(redis_client.execute_command("VISMEMBER", long_key, f"L#{k}") for k in range(chunks))

        searcher = Searcher(settings, encoder=Encoder.load(str(tiny_model_dir), document_prefix="", query_prefix=""))
        searcher.setup()
        for doc_id in ("s3", "s17", "s31"):
            hits = searcher.search(short[doc_id], k=5)
            assert hits[0].id == doc_id and hits[0].score > 0.999
            assert len({h.id for h in hits}) == len(hits), "one hit per document"

        shorter = " ".join(f"word{i}" for i in range(150))
        produce(settings, [doc("L", shorter)])
        wait_until(lambda: all_committed(settings), timeout=60, message="commit of the shorter L")
        now = json.loads(redis_client.execute_command("VGETATTR", long_key, "L#0"))["chunks"]
        assert now < chunks
        assert not redis_client.execute_command("VISMEMBER", long_key, f"L#{now}")
        produce(settings, [(b"L", b'{"id": "L", "op": "delete"}')])
        wait_until(lambda: all_committed(settings), timeout=60, message="commit of the delete")
        assert not any(redis_client.execute_command("VISMEMBER", long_key, f"L#{k}") for k in range(chunks))
    finally:
        worker.stop()
    table = read_parquet(settings)
    long_rows = table.filter(pc.equal(table["id"], "L"))
    first = min(long_rows["kafka_offset"].to_pylist())
    first_version = long_rows.filter(pc.equal(long_rows["kafka_offset"], first))
    assert sorted(first_version["chunk"].to_pylist()) == list(range(chunks))
    assert long_rows.filter(pc.equal(long_rows["op"], "delete")).num_rows == 1


def test_a_restarted_worker_loses_nothing_and_writes_nothing_twice(
        kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    create_topic(settings, partitions=3)
    rng = random.Random(3)
    docs = [doc(f"r{i}", news_text(rng, rng.randint(5, 60))) for i in range(900)]
    produce(settings, docs[:600])
    first = WorkerThread(settings).start()
    wait_until(lambda: sum(committed_offsets(settings).values()) >= 150, timeout=60, message="some commits")
    first.stop()
    produce(settings, docs[600:])  # the stream goes on while no worker runs
    assert not all_committed(settings)
    second = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=120, message="every offset committed")
    finally:
        second.stop()
    table = read_parquet(settings)
    pairs = set(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
    assert table.num_rows == len(pairs) == 900
    key = VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1).base
    assert redis_client.execute_command("VCARD", key) == 900
