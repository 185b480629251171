"""Search: a query through the same encoder (query prefix) against every shard, merged by score.

The index searched is the alias `{prefix}:current` when one was set (by a backfill with
--target), else `redis.index` (default: the model slug). A chunked document scores as its best
chunk. FILTER expressions go to Redis as they are (`.lang == "ko" and .published_at > 1764000000`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import orjson
from redis.exceptions import RedisError, ResponseError

from pipelines.config import EmbedworkerSettings
from workers.encoding.encoder import Encoder
from workers.errors import EmbedworkerError
from workers.secrets import redact_url
from workers.settings import model_slug
from workers.sinks.redis_client import connect, explain_redis_error
from workers.sinks.vector_sets import VectorSetIndex, alias_key, alias_target, list_indexes, resolve_index


class SearchError(EmbedworkerError):
    """The search could not run: no index, a bad filter expression, Redis unreachable."""


class FilterError(SearchError):
    """Redis rejected the FILTER expression (the caller's mistake: the query service answers 400)."""


class UnknownIndexError(SearchError):
    """No index (or alias) of that name under the key prefix (the service answers 404)."""


class RedisUnavailableError(SearchError):
    """Redis did not answer or refused the connection (the service answers 503 and recovers
    by itself once Redis is back: the clients reconnect on the next request)."""


@dataclass
class SearchHit:
    id: str
    score: float
    chunk: int = 0
    title: str | None = None
    url: str | None = None
    source: str | None = None
    lang: str | None = None
    published_at: int | None = None
    attrs: dict = field(default_factory=dict)
    explain: dict | None = None  # how a search ranked it (pipelines/serving/hybrid.py)

    def to_dict(self) -> dict:
        return asdict(self)


class Searcher:
    """Searches one Redis deployment. The CLI calls `setup()` (the alias or configured index,
    which must hold vectors); the query service calls `connect()` and names an index per request
    (`resolve`), so that a service started before its index, or an alias moved by a backfill,
    is followed without a restart."""

    def __init__(self, settings: EmbedworkerSettings, encoder: Encoder | None = None, retry_settings=None):
        self.settings = settings
        self.encoder = encoder
        self._retry_settings = retry_settings or settings.redis  # the service retries once, not for seconds
        self._by_url: dict = {}
        self._resolved: dict[str | None, tuple[float, VectorSetIndex]] = {}
        self.index: VectorSetIndex | None = None
        self._pool: ThreadPoolExecutor | None = None  # the shards' VSIMs in parallel (made when first needed)

    def connect(self) -> None:
        """Open a client per Redis URL (nothing is sent yet)."""
        r = self.settings.redis
        self._by_url = {u: connect(self._retry_settings, u) for u in dict.fromkeys(r.shard_urls or [r.url])}

    def setup(self) -> None:
        """Load the encoder (if not given), connect, and check the index holds vectors. Raises
        SearchError (RedisUnavailableError, or a sentence listing the indexes there are)."""
        s = self.settings
        if self.encoder is None:
            self.encoder = Encoder.from_settings(s.model, s.batching)
        self.connect()
        self.index = self.resolve(None)
        clients = self._clients(self.index)
        try:
            present = [bool(clients[i].exists(key)) for i, key in enumerate(self.index.shard_keys())]
        except RedisError as exc:
            raise self._unavailable(exc) from None
        if not any(present):  # Redis removes a vector set with its last element: empty = missing
            others = list_indexes(clients[0], s.redis)
            raise SearchError(f"index {self.index.base} is empty or missing; indexes here: "
                              + (", ".join(others) if others else f"none under {s.redis.key_prefix}:"))

    def resolve(self, name: str | None, max_age_s: float = 0.0) -> VectorSetIndex:
        """The index `name` names: None is the alias if set, else the configured index (which may
        not exist yet); `current` is the alias; any other name must have a meta hash. Answers
        younger than `max_age_s` come from a cache. Raises UnknownIndexError, RedisUnavailableError."""
        cached = self._resolved.get(name)
        if cached and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        s = self.settings
        first = next(iter(self._by_url.values()))
        try:
            if name is None:
                index = resolve_index(first, s.redis, model_slug(s.model.name))
            else:
                target = alias_target(first, s.redis) if name == "current" else name
                if not target:
                    raise UnknownIndexError(f"no search alias is set ({alias_key(s.redis)}); name an index")
                index = VectorSetIndex.stored(first, s.redis, target)
                if not index.meta:
                    others = list_indexes(first, s.redis)
                    raise UnknownIndexError(f"no index {name!r} under {s.redis.key_prefix}:; indexes here: "
                                            + (", ".join(others) if others else "none"))
        except RedisError as exc:
            raise self._unavailable(exc) from None
        self._resolved[name] = (time.monotonic(), index)
        return index

    def search(self, query: str, k: int = 10, filter: str | None = None, ef: int | None = None) -> list[SearchHit]:
        vector = self.encoder.encode_queries([query])[0]
        return self.search_vector(vector, k, filter, ef)

    def search_vector(self, vector: np.ndarray, k: int = 10, filter: str | None = None,
                      ef: int | None = None, index: VectorSetIndex | None = None) -> list[SearchHit]:
        """Top k documents for a normalized query vector over every shard of `index` (default:
        the one `setup` resolved). Raises FilterError, RedisUnavailableError, SearchError."""
        index = index or self.index
        blob = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        count = k * 3 if self.settings.model.chunking.enabled else k
        keys = index.shard_keys()
        clients = self._clients(index)

        args: list = ["WITHSCORES", "WITHATTRIBS", "COUNT", count, "EF", ef or self.settings.redis.search_ef]
        if filter:
            args += ["FILTER", filter]

        def one(i: int) -> list[SearchHit]:
            # Raw VSIM, parsed here: a shard that is empty now (never filled, or emptied since —
            # Redis drops a vector set with its last element) answers an empty reply, which is no hits.
            try:
                reply = clients[i].execute_command("VSIM", keys[i], "FP32", blob, *args)
            except ResponseError as exc:
                if "syntax" in str(exc).lower() or "filter" in str(exc).lower():
                    raise FilterError(f"the filter expression was rejected by Redis: {exc}") from None
                raise SearchError(f"VSIM on {keys[i]} failed: {exc}") from None
            except RedisError as exc:
                raise self._unavailable(exc) from None
            return [_hit(element, score, attrs) for element, score, attrs in _vsim_entries(reply)]

        if len(keys) == 1:
            replies = [one(0)]
        else:
            if self._pool is None:  # one pool for every search (its threads start when first needed)
                self._pool = ThreadPoolExecutor(16, thread_name_prefix="vsim")
            replies = list(self._pool.map(one, range(len(keys))))
        best: dict[str, SearchHit] = {}
        for hits in replies:
            for hit in hits:
                if hit.id not in best or hit.score > best[hit.id].score:
                    best[hit.id] = hit
        return sorted(best.values(), key=lambda h: -h.score)[:k]

    def count(self) -> int:
        clients = self._clients(self.index)
        return sum(int(clients[i].execute_command("VCARD", key) or 0) for i, key in enumerate(self.index.shard_keys()))

    def ping(self) -> None:
        """One PING per Redis URL; raises RedisUnavailableError naming what failed."""
        for client in self._by_url.values():
            try:
                client.ping()
            except RedisError as exc:
                raise self._unavailable(exc) from None

    def _clients(self, index: VectorSetIndex) -> list:
        urls = list(self._by_url)
        return [self._by_url[urls[i % len(urls)]] for i in range(index.shards)]

    def _unavailable(self, exc: RedisError) -> RedisUnavailableError:
        r = self.settings.redis
        err = explain_redis_error(exc, r.url, r)
        return RedisUnavailableError(str(err) if err else f"Redis at {redact_url(r.url)} is unreachable: {exc}")


def _vsim_entries(reply) -> list[tuple]:
    """(element, score, attributes JSON) of a VSIM … WITHSCORES WITHATTRIBS reply: a map in RESP3,
    a flat list of triples in RESP2, an empty list for a missing key."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(element, entry[0], entry[1]) for element, entry in reply.items()]
    it = iter(reply)
    return list(zip(it, it, it))


def _hit(element, score, raw_attrs) -> SearchHit:
    name = element.decode() if isinstance(element, bytes) else element
    return hit_from_attributes(name, score, orjson.loads(raw_attrs) if raw_attrs else {})


def hit_from_attributes(name: str, score, attrs: dict) -> SearchHit:
    """A hit from an element's (or a lexical document's) attributes; `attrs` is consumed."""
    doc_id = attrs.pop("id", None) or name
    hit = SearchHit(id=doc_id, score=float(score), chunk=int(attrs.pop("chunk", 0) or 0))
    for name in ("title", "url", "source", "lang", "published_at"):
        setattr(hit, name, attrs.pop(name, None))
    attrs.pop("chunks", None)
    attrs.pop("model", None)
    hit.attrs = attrs
    return hit
