"""The names of an index's Redis keys, shared by the sink, search, status and backfill.

An index is the vector set `{prefix}:{index}` (index: `redis.index`, `--target` or the model
slug) and its metadata hash `{prefix}:{index}:meta`. With S > 1 shards, a stable hash of the
document id picks one of S keys, so that several Redis processes or Redis Cluster masters share
the inserts (one vector set takes only a few thousand VADD/s). Two key layouts:

- "plain": shard i is `{prefix}:{index}:{i}`, on `redis.shard_urls[i % n]` (or the one server).
- "slots", for Redis Cluster: shard i is `{prefix}:{index}:{<i>-<k>}`, whose hash tag `<i>-<k>`
  (k the first that fits) puts the key in the middle of the i-th of S equal slot ranges. A
  cluster's masters hold equal slot ranges unless someone resharded by hand (`redis-cli
  --cluster create` and infra/local/redis_cluster.py make them so), so S shards land S/M on each
  of M masters, where plain names land wherever their hashes fall (6 shards on 3 masters went
  3/2/1). The names depend on S only, never on the cluster's current map.

Beside each shard key, with `redis.retention`, a sorted set (`times_key`) scores every element
with its published_at (or ingestion) time; the driver's sweep removes what has aged out of both.

The layout is recorded in the meta hash (`key_layout`) when a sink first writes an index, and
read from there by everyone else, so an index keeps its names: indexes written before the
"slots" layout existed (no `key_layout`) stay "plain".
"""

from __future__ import annotations

import zlib
from functools import cache, cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from workers.errors import IndexLayoutError
from workers.settings import RedisSettings

LAYOUTS = ("plain", "slots")


class VectorSetIndex:
    def __init__(self, key_prefix: str, index: str, shards: int, layout: str = "plain"):
        if layout not in LAYOUTS:
            raise IndexLayoutError(f"index {key_prefix}:{index} has the unknown key layout {layout!r} (this version "
                                   f"knows {', '.join(LAYOUTS)}): was it written by a newer embedworker?")
        self.name = index  # as the lake's `index` column names it
        self.base = f"{key_prefix}:{index}"
        self.shards = shards
        self.layout = layout
        self.meta_key = f"{self.base}:meta"
        self.meta: dict[str, str] = {}  # the stored meta hash, decoded (from_meta, stored)

    @classmethod
    def new(cls, settings: RedisSettings, index: str) -> VectorSetIndex:
        """The layout a new index gets: spread over the slots on a Redis Cluster, else plain."""
        layout = "slots" if settings.cluster and settings.shards > 1 else "plain"
        return cls(settings.key_prefix, index, settings.shards, layout)

    @classmethod
    def from_meta(cls, settings: RedisSettings, index: str, meta: dict) -> VectorSetIndex:
        """The index as its meta hash (decoded; empty when the index is new) describes it."""
        if not meta:
            return cls.new(settings, index)
        found = cls(settings.key_prefix, index, int(meta.get("shards", settings.shards)), meta.get("key_layout", "plain"))
        found.meta = dict(meta)
        return found

    @classmethod
    def stored(cls, client, settings: RedisSettings, index: str) -> VectorSetIndex:
        """Read `index`'s meta hash through `client` (one HGETALL; RedisError propagates)."""
        raw = client.hgetall(f"{settings.key_prefix}:{index}:meta")
        return cls.from_meta(settings, index, {_text(k): _text(v) for k, v in raw.items()})

    @cached_property
    def _keys(self) -> list[str]:
        if self.shards == 1:
            return [self.base]
        if self.layout == "plain":
            return [f"{self.base}:{i}" for i in range(self.shards)]
        return [f"{self.base}:{{{slot_tag(i, self.shards)}}}" for i in range(self.shards)]

    def shard_keys(self) -> list[str]:
        return list(self._keys)

    def shard_of(self, doc_id: str) -> int:
        return zlib.crc32(doc_id.encode("utf-8")) % self.shards

    def key_for(self, doc_id: str) -> str:
        return self._keys[self.shard_of(doc_id)]

    @staticmethod
    def times_key(key: str) -> str:
        """The sorted set of (time, element) beside shard `key`, for retention: in the key's slot
        (its hash tag, or the key itself as the tag) and under the key prefix."""
        return f"{key}:times" if "{" in key else f"{key}:{{{key}}}:times"

    @staticmethod
    def element(doc_id: str, chunk: int, chunked: bool) -> str:
        return f"{doc_id}#{chunk}" if chunked else doc_id


@cache
def slot_tag(shard: int, shards: int) -> str:
    """The hash tag `<shard>-<k>` with the smallest k whose slot lies in the middle half of the
    shard's equal share of the 16384 slots (the middle: clear of the ranges' edges)."""
    width = REDIS_CLUSTER_HASH_SLOTS / shards
    low = int(shard * width + width / 4)
    high = max(low + 1, int(shard * width + 3 * width / 4))
    k = 0
    while not low <= key_slot(f"{shard}-{k}".encode()) < high:
        k += 1
    return f"{shard}-{k}"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def alias_key(settings: RedisSettings) -> str:
    """The key of the search alias: the name of the index searches use (set by a backfill with
    `--target` or `lake reindex`)."""
    return f"{settings.key_prefix}:current"


def alias_target(client, settings: RedisSettings) -> str | None:
    """The index name the search alias holds, None when no alias is set."""
    name = client.get(alias_key(settings))
    return name.decode() if isinstance(name, bytes) else name


def resolve_index(client, settings: RedisSettings, slug: str) -> VectorSetIndex:
    """The index searches should use: the alias if set, else the configured one."""
    return VectorSetIndex.stored(client, settings, alias_target(client, settings) or settings.index or slug)


def list_indexes(client, settings: RedisSettings) -> list[str]:
    """`{prefix}:{index}` of every index with a meta key (written when a sink starts on it),
    and how many vectors each holds."""
    out = []
    for raw in sorted(client.scan_iter(match=f"{settings.key_prefix}:*:meta", count=1000)):
        base = (raw.decode() if isinstance(raw, bytes) else raw)[:-len(":meta")]
        index = VectorSetIndex.stored(client, settings, base[len(settings.key_prefix) + 1:])
        out.append(f"{base} ({sum(int(client.execute_command('VCARD', k) or 0) for k in index.shard_keys())} vectors)")
    return out
