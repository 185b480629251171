"""Retention of the vector index (`redis.retention`): the driver's sweep.

The Redis sink scores every element it adds in a sorted set beside its shard key
(`VectorSetIndex.times_key`) with the document's published_at (else its ingestion time), and
removes it from there with every VREM. Every `redis.retention_sweep_s` the supervisor runs
`RetentionSweeper.tick()` in a thread of its own: per shard, a Lua script takes up to BATCH
elements scored before the cut-off and removes them from the vector set and the sorted set in one
step, so a document re-published meanwhile (its score moved by the sink's ZADD) is either swept
before the write or kept after it, never half. The input is not paused; the lake keeps everything.

Redis errors end the sweep early and are counted (`embedworker_retention_errors_total`), logged
once a minute, and tried again at the next interval (status reports Redis itself).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge
from redis.exceptions import RedisError

from pipelines.config import EmbedworkerSettings
from workers.sinks.fenced_writes import sources_key
from workers.sinks.redis_client import connect, explain_redis_error
from workers.sinks.vector_sets import VectorSetIndex

log = logging.getLogger("embedworker.retention")
BATCH = 500  # elements per script call: short enough not to hold Redis long

# KEYS: the shard, its times set, its sources hash (workers/sinks/fenced_writes.py: an expired
# element's source goes with it; a stale write of it is refused as too old by the sink anyway)
SWEEP = """
local elements = redis.call('ZRANGE', KEYS[2], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
for _, element in ipairs(elements) do
  redis.call('VREM', KEYS[1], element)
end
if #elements > 0 then
  redis.call('ZREM', KEYS[2], unpack(elements))
  redis.call('HDEL', KEYS[3], unpack(elements))
end
return #elements
"""


class RetentionSweeper:
    def __init__(self, settings: EmbedworkerSettings, registry: CollectorRegistry | None = None):
        self.settings = settings
        self.retention_s = settings.redis.retention_s if settings.redis.enabled else None
        self.index_name = settings.redis.index_name(settings.model.name)
        reg = registry or CollectorRegistry()
        self.expired = Counter("embedworker_vectors_expired", "Vectors removed by the retention sweep", ["index"],
                               registry=reg).labels(self.index_name)
        self.oldest_age = Gauge("embedworker_oldest_vector_age_seconds",
                                "Age of the oldest vector Redis keeps, after the last sweep",
                                ["index"], registry=reg).labels(self.index_name)
        self.errors = Counter("embedworker_retention_errors", "Sweeps ended by a Redis error (tried again later)",
                              registry=reg)
        self._next = time.monotonic() + 5.0  # the first sweep soon after the start
        self._logged = 0.0

    def due(self) -> bool:
        """Called by the supervise loop; True once per `redis.retention_sweep_s` (never without retention)."""
        if self.retention_s is None or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.settings.redis.retention_sweep_s
        return True

    def tick(self, now: float | None = None) -> dict:
        """One sweep of every shard of the index: {"expired": n, "oldest": epoch s or None}.
        `now` is for tests (the sweep as it will run later)."""
        r = self.settings.redis
        cutoff = (now or time.time()) - (self.retention_s or 0)
        urls = r.shard_urls or [r.url]
        expired, oldest = 0, None
        try:
            clients = {u: connect(r, u) for u in dict.fromkeys(urls)}
            try:
                index = VectorSetIndex.stored(clients[urls[0]], r, self.index_name)
                for i, key in enumerate(index.shard_keys()):
                    client = clients[urls[i % len(urls)]]
                    times = VectorSetIndex.times_key(key)
                    while True:
                        removed = int(client.eval(SWEEP, 3, key, times, sources_key(key), repr(cutoff), BATCH))
                        expired += removed
                        self.expired.inc(removed)
                        if removed < BATCH:
                            break
                    first, _ = index_times(client, key)
                    if first is not None:
                        oldest = first if oldest is None else min(oldest, first)
            finally:
                for client in clients.values():
                    client.close()
        except RedisError as exc:
            self.errors.inc()
            if time.monotonic() - self._logged >= 60:
                self._logged = time.monotonic()
                log.warning("retention sweep of %s stopped (tried again in %g s): %s", self.index_name,
                            r.retention_sweep_s, explain_redis_error(exc, urls[0], r) or exc)
            return {"expired": expired, "oldest": oldest, "error": str(exc)}
        self.oldest_age.set(max(0.0, time.time() - oldest) if oldest is not None else 0)
        if expired:
            log.info("retention: %d vector(s) of %s older than %s removed from Redis", expired, self.index_name,
                     r.retention)
        return {"expired": expired, "oldest": oldest}


def index_times(client, key: str) -> tuple[float | None, float | None]:
    """(oldest, newest) time scored beside shard `key` (None, None without retention data)."""
    times = VectorSetIndex.times_key(key)
    first = client.zrange(times, 0, 0, withscores=True)
    last = client.zrange(times, -1, -1, withscores=True)
    return (first[0][1] if first else None, last[0][1] if last else None)

