"""Redis rebuilt from the lake: after a stream indexed documents (with an update and a delete),
the vector sets are dropped; `embedworker restore` adds them back from the lake without the
model, and the same searches give the same answers; a second restore changes nothing."""

import json

import pytest
import yaml

from pipelines.cli.main import main
from pipelines.serving.search import Searcher
from tests.helpers import WorkerThread, all_committed, create_topic, doc, make_settings, produce, wait_until
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = pytest.mark.integration
WORDS = ["서울 아파트 전셋값", "반도체 수출 증가", "태풍 상륙 예보", "election results tonight", "chip market rally",
         "야구 결승전", "central bank rates", "storm warning coast"]


def test_restore_gives_back_the_same_answers(kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path,
                                             unique, capsys):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             redis={"shards": 2}, parquet={"max_seconds": 0.3})
    create_topic(settings, partitions=2)
    records = [doc(f"r{i}", f"{WORDS[i % len(WORDS)]} {i}", title=f"title {i}", lang="ko" if i % 2 else "en")
               for i in range(40)]
    records += [doc("r3", "반도체 수출 증가 (updated)", title="title 3 v2"), (b"r5", b'{"id": "r5", "op": "delete"}')]
    produce(settings, records)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=90, message="indexed")
    finally:
        worker.stop()
    searcher = Searcher(settings)
    searcher.setup()
    queries = ["반도체 수출", "storm", "election", "야구"]
    before = {q: [(h.id, round(h.score, 5), h.title) for h in searcher.search(q, k=5)] for q in queries}
    count = searcher.count()
    assert count == 39  # 40 documents, one deleted

    index = VectorSetIndex.stored(redis_client, settings.redis, "tiny-bert")
    redis_client.delete(*index.shard_keys(), index.meta_key)  # Redis lost the index
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    assert main(["restore", "-c", str(config), "--json"]) == 0
    assert '"vectors": 39' in capsys.readouterr().out
    after = Searcher(settings)
    after.setup()
    assert after.count() == count
    assert {q: [(h.id, round(h.score, 5), h.title) for h in after.search(q, k=5)] for q in queries} == before
    assert main(["restore", "-c", str(config)]) == 0, "a second restore writes the same elements"
    assert after.count() == count
    restored = VectorSetIndex.stored(redis_client, settings.redis, "tiny-bert")
    assert json.loads(redis_client.execute_command("VGETATTR", restored.key_for("r3"), "r3"))["title"] == "title 3 v2"
    assert not redis_client.execute_command("VISMEMBER", restored.key_for("r5"), "r5"), "the deletion holds"
