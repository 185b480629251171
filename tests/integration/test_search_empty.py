"""Search on an empty or missing index answers in one sentence (exit 1), naming the indexes
that do exist; once the index holds a vector, the same search finds it."""

import numpy as np
import pytest
import yaml

from pipelines.cli import main
from pipelines.search import Searcher, SearchError
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
