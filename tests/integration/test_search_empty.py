"""Search on an empty or missing index answers in one sentence (exit 1), naming the indexes
that do exist; once the index holds a vector, the same search finds it."""

import numpy as np
import pytest
import yaml

from pipelines.cli.main import main
from pipelines.serving.search import Searcher, SearchError
from tests.helpers import make_settings
from workers.sinks.base import SinkRecord
from workers.sinks.redis_vset import RedisVectorSetSink

pytestmark = pytest.mark.integration


def test_search_on_an_empty_index_says_so_then_finds(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                                                     capsys):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             redis={"index": "v3"})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    assert main(["search", "-c", str(config), "anything"]) == 1
    out = capsys.readouterr()
    assert f"index test{unique}:v3 is empty or missing" in out.err + out.out
    assert "Traceback" not in out.err + out.out

    sink = RedisVectorSetSink(settings.redis, "tiny", "tiny", 32)
    sink.setup()  # writes the meta key: the index exists, still empty
    with pytest.raises(SearchError, match=f"indexes here: test{unique}:v3 \\(0 vectors\\)"):
        Searcher(settings).setup()
    vector = np.ones(32, dtype=np.float32) / np.sqrt(32)
    sink.write([SinkRecord(id="doc-1", op="upsert", topic="t", partition=0, offset=0, vector=vector)])
    searcher = Searcher(settings)
    searcher.setup()
    assert [h.id for h in searcher.search("anything", k=3)] == ["doc-1"]
    sink.close()


def test_a_long_lived_searcher_follows_shards_filled_and_emptied_after_setup(kafka_bootstrap, redis_url,
                                                                             tiny_model_dir, tmp_path, unique):
    """A Searcher set up once (as a service holds it) searches a shard that was empty at setup and
    filled later, and a shard emptied since (Redis drops the key) answers no hits, not an error."""
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique,
                             redis={"index": "v4", "shards": 2})
    sink = RedisVectorSetSink(settings.redis, "tiny", "tiny", 32)
    sink.setup()
    first: dict[int, str] = {}
    for n in range(100):
        first.setdefault(sink.index.shard_of(f"doc-{n}"), f"doc-{n}")
    vector = np.ones(32, dtype=np.float32) / np.sqrt(32)

    def put(doc_id: str, op: str = "upsert"):
        sink.write([SinkRecord(id=doc_id, op=op, topic="t", partition=0, offset=0,
                               vector=vector if op == "upsert" else None)])

    put(first[0])
    searcher = Searcher(settings)
    searcher.setup()  # shard 1 is missing now
    assert [h.id for h in searcher.search_vector(vector, k=5)] == [first[0]]
    put(first[1])
    assert sorted(h.id for h in searcher.search_vector(vector, k=5)) == sorted([first[0], first[1]])
    put(first[0], "delete")  # shard 0 emptied: Redis removes the key
    assert [h.id for h in searcher.search_vector(vector, k=5)] == [first[1]]
    assert [h.id for h in searcher.search_vector(vector, k=5, filter='.lang == "xx"')] == []
    sink.close()
