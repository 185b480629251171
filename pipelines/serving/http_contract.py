"""The query service's HTTP contract: what a request may hold, and the errors it answers.

Bodies are checked here, by hand, so that every 4xx names the field at fault the way OpenAI's
API does (`{"error": {"message", "type", "param", "code"}}`: the `openai` client raises it as
`BadRequestError` with that message). Nothing in this module touches Ray, Redis or the model.
"""

from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass

import numpy as np
import orjson

from pipelines.config import ServeSettings

INPUT_TYPES = {"query": "query", "passage": "passage", "document": "passage"}  # "document": TEI/Cohere's word
SEARCH_FIELDS = ("query", "k", "filter", "ef", "index", "mode")
SEARCH_MODES = ("dense", "lexical", "hybrid")


class ApiError(Exception):
    """A request the service refuses; `status` is the HTTP status, `param` the field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str = "invalid_request"):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error", 503: "service_unavailable"}
        return {"error": {"message": self.message, "type": kind.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


@dataclass
class EmbeddingQuery:
    texts: list[str]
    input_type: str        # "query" or "passage"
    model: str
    base64: bool
    truncate: bool


@dataclass
class SearchQuery:
    query: str
    k: int
    filter: str | None
    ef: int | None
    index: str | None
    mode: str | None = None


def parse_json(raw: bytes) -> dict:
    """The request body as a JSON object; raises ApiError (400, param "body")."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}", "body", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", "body", "invalid_json")
    return body


def check_api_key(authorization: str | None, key: str | None) -> None:
    """With `serve.api_key` set, the request must carry `Authorization: Bearer <key>` (401 otherwise)."""
    if key is None:
        return
    given = (authorization or "").removeprefix("Bearer ").strip()
    if not given:
        raise ApiError(401, "this service needs an API key: send the header 'Authorization: Bearer <key>'",
                       "Authorization", "missing_api_key")
    if not hmac.compare_digest(given.encode(), key.encode()):
        raise ApiError(401, "the API key in the Authorization header is wrong", "Authorization", "invalid_api_key")


def parse_embedding_request(body: dict, serve: ServeSettings, served_models: set[str]) -> EmbeddingQuery:
    """An OpenAI embeddings request: `input` (a string or a list of strings), `model`,
    `encoding_format` (float | base64), `input_type` (query by default, or passage), `truncate`."""
    raw = body.get("input")
    if raw is None:
        raise ApiError(400, "input is required: a string or a list of strings", "input", "missing_input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list):
        raise ApiError(400, "input must be a string or a list of strings", "input", "invalid_input")
    if not texts:
        raise ApiError(400, "input is an empty list: send at least one text", "input", "empty_input")
    if len(texts) > serve.max_inputs:
        raise ApiError(400, f"input holds {len(texts)} texts; at most {serve.max_inputs} per request "
                       "(serve.max_inputs)", "input", "too_many_inputs")
    for i, text in enumerate(texts):
        where = "input" if isinstance(raw, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise ApiError(400, f"{where} is not a string (token ids are not accepted: send text)", where, "invalid_input")
        if not text.strip():
            raise ApiError(400, f"{where} is empty", where, "empty_input")
        if len(text) > serve.max_input_chars:
            raise ApiError(400, f"{where} has {len(text):,} characters; at most {serve.max_input_chars:,} "
                           "(serve.max_input_chars)", where, "input_too_long")
    model = body.get("model")
    if model is None:
        model = next(iter(sorted(served_models)))
    if model not in served_models:
        raise ApiError(404, f"model {model!r} is not served here; this service serves {sorted(served_models)[0]!r}",
                       "model", "model_not_found")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise ApiError(400, f"encoding_format must be 'float' or 'base64', not {fmt!r}", "encoding_format",
                       "invalid_encoding_format")
    kind = body.get("input_type", "query")
    if kind not in INPUT_TYPES:
        raise ApiError(400, f"input_type must be 'query' or 'passage', not {kind!r}", "input_type", "invalid_input_type")
    truncate = body.get("truncate", False)
    if not isinstance(truncate, bool):
        raise ApiError(400, "truncate must be true or false", "truncate", "invalid_truncate")
    return EmbeddingQuery(texts, INPUT_TYPES[kind], model, fmt == "base64", truncate)


def check_dimensions(body: dict, dim: int) -> None:
    """OpenAI's `dimensions`: this model has one size; any other is refused, not cut."""
    asked = body.get("dimensions")
    if asked is not None and asked != dim:
        raise ApiError(400, f"dimensions must be {dim} (this model's size) or left out; got {asked!r}",
                       "dimensions", "invalid_dimensions")


def check_lengths(counts: list[int], max_tokens: int, single: bool, truncate: bool) -> None:
    """A text longer than the model reads is refused (400) unless the request asked to truncate."""
    if truncate:
        return
    for i, n in enumerate(counts):
        if n > max_tokens:
            where = "input" if single else f"input[{i}]"
            raise ApiError(400, f"{where} is {n} tokens long; the model reads at most {max_tokens} (send "
                           "\"truncate\": true to embed its beginning)", where, "input_too_long")


def embedding_response(vectors: np.ndarray, model: str, as_base64: bool, tokens: int) -> dict:
    """The OpenAI embeddings response body (base64: little-endian float32, as OpenAI encodes it)."""
    data = []
    for i, vector in enumerate(vectors):
        v = np.ascontiguousarray(vector, dtype="<f4")
        data.append({"object": "embedding", "index": i,
                     "embedding": base64.b64encode(v.tobytes()).decode() if as_base64 else v.tolist()})
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def parse_search_request(body: dict, serve: ServeSettings) -> SearchQuery:
    """`{query, k, filter, ef, index, mode}`: k in 1..serve.max_k, ef in 1..10000, filter a string
    of at most serve.max_filter_chars (Redis judges its syntax), index an index name or `current`,
    mode dense, lexical or hybrid (default: search.mode)."""
    unknown = sorted(set(body) - set(SEARCH_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; a search takes {', '.join(SEARCH_FIELDS)}", unknown[0],
                       "unknown_field")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ApiError(400, "query is required: a non-empty string", "query", "invalid_query")
    if len(query) > serve.max_input_chars:
        raise ApiError(400, f"query has {len(query):,} characters; at most {serve.max_input_chars:,} "
                       "(serve.max_input_chars)", "query", "input_too_long")
    k = _integer(body, "k", 10, 1, serve.max_k)
    ef = _integer(body, "ef", None, 1, 10_000)
    flt = body.get("filter")
    if flt is not None and (not isinstance(flt, str) or len(flt) > serve.max_filter_chars):
        raise ApiError(400, f"filter must be a string of at most {serve.max_filter_chars} characters, e.g. "
                       "'.lang == \"ko\" and .published_at >= 1764000000'", "filter", "invalid_filter")
    index = body.get("index")
    if index is not None and (not isinstance(index, str) or not index or ":" in index or len(index) > 200):
        raise ApiError(400, "index must be an index name (without the key prefix) or 'current'", "index",
                       "invalid_index")
    mode = body.get("mode")
    if mode is not None and mode not in SEARCH_MODES:
        raise ApiError(400, f"mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}", "mode", "invalid_mode")
    return SearchQuery(query, k, flt or None, ef, index, mode)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}; got {value!r}", name, f"invalid_{name}")
    return value
