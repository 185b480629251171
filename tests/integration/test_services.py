"""The local services are the real thing: Apache Kafka 4.x and Redis >= 8 with vector sets."""

import json

import numpy as np
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

pytestmark = pytest.mark.integration


def test_kafka_is_a_real_4x_broker_with_consumer_groups(kafka_bootstrap, unique):
    topic, group = f"svc-test-{unique}", f"svc-group-{unique}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        for i in range(1000):
            doc = {"id": f"doc-{i}", "text": f"기사 {i} news item {i}"}
            producer.send(topic, key=doc["id"].encode(), value=json.dumps(doc).encode())
        producer.flush()
        producer.close()

        consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        seen, per_partition = {}, {}
        while len(seen) < 1000:
            batch = consumer.poll(timeout_ms=5000)
            assert batch, f"no records after {len(seen)}"
            for tp, records in batch.items():
                for rec in records:
                    seen[rec.key.decode()] = json.loads(rec.value)
                    per_partition[tp.partition] = rec.offset + 1
            consumer.commit()
        assert set(seen) == {f"doc-{i}" for i in range(1000)}
        assert all(seen[k]["id"] == k for k in seen)
        assert len(per_partition) == 3, "keys spread over all 3 partitions"
        tps = [TopicPartition(topic, p) for p in range(3)]
        ends = consumer.end_offsets(tps)
        committed = {tp.partition: consumer.committed(tp) for tp in tps}
        consumer.close()
        assert committed == {tp.partition: ends[tp] for tp in tps}
        assert sum(ends.values()) == 1000

        # The group's offsets as the broker stores them, read back by the admin API.
        offsets = admin.list_group_offsets(group)[group]
        assert {tp.partition: meta.offset for tp, meta in offsets.items()} == committed
    finally:
        admin.delete_topics([topic])
        admin.close()


def _unit_vectors(n, dim, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype("<f4")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_redis_vector_sets_vadd_vsim_filter_vrem(redis_client, unique):
    key = f"svc-test:{unique}"
    info = redis_client.info("server")
    assert int(info["redis_version"].split(".")[0]) >= 8
    vs = redis_client.vset()
    vectors = _unit_vectors(1000, 64, seed=7)
    try:
        pipe = redis_client.pipeline(transaction=False)
        for i, v in enumerate(vectors):
            attrs = {"lang": "ko" if i % 2 else "en", "published_at": 1764000000 + i}
            pipe.vset().vadd(key, v.astype("<f4").tobytes(), f"e{i}", attributes=attrs)
        assert all(r == 1 for r in pipe.execute())
        assert vs.vcard(key) == 1000
        assert vs.vdim(key) == 64

        for i in (0, 17, 999):
            top = vs.vsim(key, vectors[i].tobytes(), count=3, with_scores=True)
            assert next(iter(top)) in (f"e{i}", f"e{i}".encode())

        filtered = vs.vsim(key, vectors[0].tobytes(), count=50, with_attribs=True,
                           filter='.lang == "ko" and .published_at >= 1764000500')
        assert filtered
        assert len(filtered) == 50
        for name, attrs in filtered.items():
            attrs = json.loads(attrs) if isinstance(attrs, (str, bytes)) else attrs
            assert attrs["lang"] == "ko" and attrs["published_at"] >= 1764000500
            index = int((name.decode() if isinstance(name, bytes) else name)[1:])
            assert index % 2 == 1 and index >= 500

        assert vs.vrem(key, "e0") == 1
        assert vs.vcard(key) == 999
        assert vs.vrem(key, "e0") == 0
        top = vs.vsim(key, vectors[0].tobytes(), count=5)
        assert "e0" not in {t.decode() if isinstance(t, bytes) else t for t in top}
    finally:
        redis_client.delete(key)
