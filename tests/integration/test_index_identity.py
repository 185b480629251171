"""A new model never writes into an index built by another: a sink, a backfill and the CLI refuse
an index whose metadata names another model, prefix or quantization (exit 2, both sides named),
and the index and its metadata stay as they were."""

import json

import numpy as np
import pytest
import yaml

from pipelines.cli.main import main
from tests.helpers import make_settings
from tests.support.models import make_random_model
from workers.errors import IndexMismatchError
from workers.settings import DEFAULT_QUANTIZATION
from workers.sinks.base import SinkRecord
from workers.sinks.redis_vset import RedisVectorSetSink

pytestmark = pytest.mark.integration


def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(32).astype(np.float32)
    return v / np.linalg.norm(v)


def test_another_model_prefix_or_quantization_is_refused(kafka_bootstrap, redis_url, redis_client, tiny_model_dir,
                                                         tmp_path, unique):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique, redis={"index": "common"})
    first = RedisVectorSetSink(settings.redis, "tiny", "org/model-a", 32, "passage: ")
    first.setup()
    first.write([SinkRecord(id="a-1", op="upsert", topic="t", partition=0, offset=0, vector=vector(1))])
    first.close()
    meta_key = first.index.meta_key
    meta_before = redis_client.hgetall(meta_key)

    same = RedisVectorSetSink(settings.redis, "tiny", "org/model-a", 32, "passage: ")
    same.setup()  # the same model again (a restart): accepted
    same.close()

    other_quant = settings.redis.model_copy(update={"quantization": "bin"})
    for sink, words in ((RedisVectorSetSink(settings.redis, "tiny", "org/model-b", 32, "passage: "),
                         ["model='org/model-a'", "model='org/model-b'"]),
                        (RedisVectorSetSink(settings.redis, "tiny", "org/model-a", 32, "search_document: "),
                         ["document_prefix='passage: '", "document_prefix='search_document: '"]),
                        (RedisVectorSetSink(other_quant, "tiny", "org/model-a", 32, "passage: "),
                         ["quantization='noquant'", "quantization='bin'"])):
        with pytest.raises(IndexMismatchError) as info:
            sink.setup()
        for word in words:
            assert word in str(info.value)
        assert f"test{unique}:common" in str(info.value)
    assert redis_client.hgetall(meta_key) == meta_before
    assert redis_client.execute_command("VCARD", first.index.shard_keys()[0]) == 1


def test_an_unset_quantization_keeps_an_index_s_own_and_gives_a_new_one_the_default(
        kafka_bootstrap, redis_url, redis_client, tiny_model_dir, tmp_path, unique):
    """An index built with q8 under the old default keeps working after the default changed."""
    unset = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique).redis.model_copy(
        update={"quantization": None, "index": "older"})

    def write(redis_settings, doc: str) -> RedisVectorSetSink:
        sink = RedisVectorSetSink(redis_settings, "tiny", "org/model-a", 32, "passage: ")
        sink.setup()
        sink.write([SinkRecord(id=doc, op="upsert", topic="t", partition=0, offset=0, vector=vector(len(doc)))])
        sink.close()
        return sink

    def quant_type(sink: RedisVectorSetSink) -> str:
        info = redis_client.execute_command("VINFO", sink.index.shard_keys()[0])  # a dict (redis-py parses it)
        value = {k.decode() if isinstance(k, bytes) else k: v for k, v in info.items()}["quant-type"]
        return value.decode() if isinstance(value, bytes) else value

    old = write(unset.model_copy(update={"quantization": "q8"}), "a-1")
    kept = write(unset, "a-22")
    assert kept.quantization == "q8" and quant_type(kept) == "int8"
    assert redis_client.execute_command("VCARD", kept.index.shard_keys()[0]) == 2
    assert redis_client.hget(old.index.meta_key, "quantization") == b"q8"
    new = write(unset.model_copy(update={"index": "newer"}), "b-1")
    assert new.quantization == DEFAULT_QUANTIZATION == "noquant" and quant_type(new) == "f32"
    assert redis_client.hget(new.index.meta_key, "quantization") == b"noquant"


def test_a_backfill_of_another_model_into_an_index_exits_2_before_any_work(kafka_bootstrap, redis_url, redis_client,
                                                                            tiny_model_dir, tmp_path, unique, capsys):
    settings = make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique)
    owner = RedisVectorSetSink(settings.redis.model_copy(update={"index": "v1"}), "tiny", str(tiny_model_dir), 32,
                               settings.model.document_prefix)
    owner.setup()
    owner.write([SinkRecord(id="a-1", op="upsert", topic="t", partition=0, offset=0, vector=vector(1))])
    owner.close()
    redis_client.set(f"test{unique}:current", "v1")

    other_model = make_random_model(tmp_path / "other-bert", seed=7)  # same dimension, another model
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**settings.model_dump(mode="json"), "model": {"name": str(other_model)}}))
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(json.dumps({"id": "b-1", "text": "another model's document"}) + "\n")
    assert main(["backfill", "-c", str(config), "--input", str(corpus), "--target", "v1"]) == 2
    out = capsys.readouterr()
    said = out.err + out.out
    assert str(tiny_model_dir) in said and str(other_model) in said and f"test{unique}:v1" in said
    assert "Traceback" not in said
    assert redis_client.execute_command("VCARD", owner.index.shard_keys()[0]) == 1
    assert redis_client.hget(owner.index.meta_key, "model").decode() == str(tiny_model_dir)
    assert redis_client.get(f"test{unique}:current").decode() == "v1"
