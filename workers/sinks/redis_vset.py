"""The Redis sink: vector sets (Redis >= 8: VADD, VREM), one element per document id (or chunk),
in the keys VectorSetIndex names (one per shard; see workers/sinks/vector_sets.py for the layouts).
Writes are fenced script calls, pipelined (workers/sinks/fenced_writes.py): each element
remembers the record that wrote it, and an older record of the same partition (a replica that
lost the partition, writing in the moment before it knows) is refused in the same round trip.
VADD upserts, so writing a record twice is harmless: the sink is idempotent.

With `redis.retention`, each VADD is paired in the same call with a ZADD of the element's
time (published_at, else the ingestion time) into the shard's times set, each VREM with a ZREM;
a document already older than the retention is not added (and a younger copy of it goes). The
driver's sweep (pipelines/maintenance/retention_sweep.py) removes what ages out later.

Writes make one attempt each (their clients retry nothing): a failure is SinkBackpressureError
whose `retry_after_s` is the retry policy's next wait (workers/sinks/redis_client.py), and the sink
stage waits it out without holding its lock, with the input paused, retrying until Redis
answers. So the lock a rebalance needs is held for one attempt at most (`socket_timeout_s`),
and a hung write pauses the input within `workers.sink_stall_s`.

Redis Cluster: each shard's batch goes to the master that holds its key's slot, on one
connection, so that `WAIT redis.wait_replicas` after it counts the replicas that hold that batch;
a failover or resharding (MOVED, ASK, a dead master) makes the client learn the slot map again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import redis
from redis.exceptions import AuthenticationError, ConnectionError, NoPermissionError, NoScriptError, ResponseError

from workers.errors import IndexMismatchError, SinkBackpressureError, SinkError
from workers.secrets import redact_url
from workers.settings import DEFAULT_QUANTIZATION, RedisSettings
from workers.sinks.base import TP, SinkRecord
from workers.sinks.fenced_writes import FENCED_WRITE, ElementOp, element_attributes, script_calls
from workers.sinks.redis_client import (
    CLUSTER_REDIRECTS,
    TRANSIENT,
    connect,
    explain_redis_error,
    retry_backoff,
    retry_policy,
    send_pipelined,
)
from workers.sinks.vector_sets import VectorSetIndex


class RedisVectorSetSink:
    name = "redis"

    def __init__(self, settings: RedisSettings, model_slug: str, model_id: str, dim: int,
                 document_prefix: str | None = None):
        self.settings = settings
        self.model_slug = model_slug
        self.model_id = model_id
        self.dim = dim
        self.document_prefix = document_prefix  # None: not recorded, not checked (vectors made elsewhere)
        self.index = VectorSetIndex.new(settings, settings.index or model_slug)  # setup() reads the stored one
        self._cas = ("CAS",) if settings.cas else ()
        self.quantization = settings.quantization or DEFAULT_QUANTIZATION  # setup() keeps a stored index's
        self._clients: list = []
        self._policy = retry_policy(settings)
        self._backoff = retry_backoff(settings)  # the waits between the stage's write attempts
        self._failures = 0  # writes failed in a row
        self._durable: dict[TP, int] = {}
        self.written = 0
        self.deleted = 0
        self.too_old = 0  # documents not indexed: older than redis.retention when they came
        self.on_too_old: Callable[[int], None] | None = None  # the worker counts them in a metric
        self.stale = 0    # element writes refused: an older record than the one that wrote them last
        self.on_stale: Callable[[int], None] | None = None
        self._script_sha = hashlib.sha1(FENCED_WRITE.encode()).hexdigest()
        self._retention_s = settings.retention_s

    def _url_of(self, shard: int) -> str:
        urls = self.settings.shard_urls or [self.settings.url]
        return urls[shard % len(urls)]

    def setup(self) -> None:
        """Connect to every shard's server, check vector sets work, record the index metadata."""
        by_url: dict[str, Any] = {}
        for shard in range(self.index.shards):
            url = self._url_of(shard)
            if url not in by_url:
                by_url[url] = connect(self.settings, url, retry=False)
            self._clients.append(by_url[url])
        for url, client in by_url.items():
            self._call(url, lambda c=client, u=url: self._check_server(c, u), retry=True)
        client = self._clients[0]
        name = self.settings.index or self.model_slug
        stored = self._call(self._url_of(0), lambda: VectorSetIndex.stored(client, self.settings, name), retry=True)
        self._check_identity(stored)
        self.index = stored
        self.quantization = self.settings.quantization or stored.meta.get("quantization") or DEFAULT_QUANTIZATION
        meta = {"model": self.model_id, "model_slug": self.model_slug, "dim": self.dim, "shards": self.index.shards,
                "quantization": self.quantization, "key_layout": self.index.layout}
        if self.document_prefix is not None:
            meta["document_prefix"] = self.document_prefix
        self._call(self._url_of(0), lambda: client.hset(self.index.meta_key, mapping={k: str(v) for k, v in meta.items()}),
                   retry=True)

    def _check_identity(self, stored: VectorSetIndex) -> None:
        check_identity(stored, {"model": self.model_id, "document_prefix": self.document_prefix,
                                "quantization": self.settings.quantization, "dim": self.dim,
                                "shards": self.settings.shards})

    @staticmethod
    def _check_server(client, url: str) -> None:
        version = client.info("server").get("redis_version", "0")
        if int(str(version).split(".")[0]) < 8:
            raise SinkError(f"Redis at {redact_url(url)} is version {version}; vector sets need Redis 8 or newer")

    def assign(self, partitions: list[TP]) -> None:
        for tp in partitions:
            self._durable.pop(tp, None)

    def write(self, records: list[SinkRecord]) -> None:
        if not records:
            return
        by_shard: dict[int, list[SinkRecord]] = {}
        for rec in records:
            by_shard.setdefault(self.index.shard_of(rec.id), []).append(rec)
        for shard, recs in by_shard.items():
            self._call(self._url_of(shard), lambda s=shard, r=recs: self._write_shard(s, r))
        for rec in records:
            self._durable[rec.tp] = max(self._durable.get(rec.tp, -1), rec.offset)

    def _write_shard(self, shard: int, records: list[SinkRecord]) -> None:
        """One shard's records as fenced script calls (workers/sinks/fenced_writes.py), pipelined
        on the connection of the key's master, then WAIT when asked. Raises what Redis raised
        (the caller turns it into backpressure or a SinkError)."""
        client, key = self._clients[shard], self.index.shard_keys()[shard]
        target = self._master_of(client, key)
        ops, too_old = self._element_ops(target, key, records)
        commands = script_calls(self._script_sha, key, self._times_key(key), ops, self.settings.ef, self.settings.m,
                                self.settings.cas)
        wait = self.settings.wait_replicas
        if wait:  # on the same connection, after the writes: WAIT counts the replicas that have them
            commands.append(("WAIT", wait, int(self.settings.wait_timeout_s * 1000)))
        results = self._send(client, target, key, commands)
        if wait and int(results[-1]) < wait:
            self._refresh_topology(client)  # a replica that died or a master that moved
            # written on the master, not yet on enough replicas: not durable, so not committed
            raise ConnectionError(f"only {results[-1]} of {wait} replica(s) acknowledged {key} within "
                                  f"{self.settings.wait_timeout_s} s (redis.wait_replicas)")
        stale = sum(int(r) for r in results[:len(results) - (1 if wait else 0)])
        if stale:
            self.stale += stale
            if self.on_stale is not None:
                self.on_stale(stale)
        self.written += sum(1 for r in records if r.op != "delete")
        self.deleted += sum(1 for r in records if r.op == "delete")
        if too_old:
            self.too_old += too_old
            if self.on_too_old is not None:
                self.on_too_old(too_old)

    def _element_ops(self, target, key: str, records: list[SinkRecord]) -> tuple[list[ElementOp], int]:
        """What `records` do to the shard's elements, in order, and how many documents are older
        than the retention (not indexed). A document that got shorter loses its old trailing
        chunks before its first chunk is rewritten: a write cut in between and retried still
        finds the old count on chunk 0 and removes them."""
        chunks_now = self._stored_chunk_counts(target, key, records)  # kept current through the batch
        quant = self.quantization.upper()
        retention = self._retention_s is not None
        cutoff = time.time() - self._retention_s if self._retention_s is not None else float("-inf")
        ops: list[ElementOp] = []
        too_old = 0
        for rec in records:
            src = f"{rec.topic}:{rec.partition}"

            def remove(elements: list[str], rec: SinkRecord = rec, src: str = src) -> None:
                ops.extend(ElementOp(False, element, src, rec.offset) for element in elements)

            if rec.op == "delete":
                remove([rec.id, *(f"{rec.id}#{k}" for k in range(chunks_now.get(rec.id, 0)))])
                chunks_now[rec.id] = 0
                continue
            if rec.chunked and rec.chunk == 0:
                # the document got shorter: its old trailing chunks go first
                remove([f"{rec.id}#{k}" for k in range(rec.chunks, chunks_now.get(rec.id, 0))])
                chunks_now[rec.id] = rec.chunks
            element = VectorSetIndex.element(rec.id, rec.chunk, rec.chunked)
            at = self._time_of(rec) if retention else None
            if at is not None and at < cutoff:
                # older than the retention already: not indexed (the lake has it); a copy indexed
                # when it was younger goes, as the sweep would take it
                too_old += rec.chunk == 0
                remove([element])
            else:
                blob = np.ascontiguousarray(rec.vector, dtype="<f4").tobytes()
                ops.append(ElementOp(True, element, src, rec.offset, at, blob, quant, element_attributes(rec, self.model_slug)))
        return ops, too_old

    def _times_key(self, key: str) -> str | None:
        return VectorSetIndex.times_key(key) if self._retention_s is not None else None

    def _send(self, client, target, key: str, commands: list[tuple]) -> list:
        """Pipeline `commands`; the script is loaded once where it is missing (a new or
        restarted server). Raises a redirect as ConnectionError (slots refreshed first)."""
        for attempt in range(2):
            try:
                results = send_pipelined(target, commands)
            except TRANSIENT:
                self._refresh_topology(client)  # a master that died: its replica may have taken over
                raise
            if attempt == 0 and any(isinstance(r, NoScriptError) for r in results):
                target.script_load(FENCED_WRITE)  # the calls before the missing one ran: writing again is idempotent
                continue
            for result in results:
                if isinstance(result, CLUSTER_REDIRECTS):  # redis-py parses these replies into typed errors
                    self._refresh_topology(client)  # a failover or resharding: learn the new masters
                    raise ConnectionError(f"{key} moved ({result}); slots refreshed")
                if isinstance(result, Exception):
                    raise result
            return results
        raise ConnectionError(f"the fenced-write script could not be loaded on the server of {key}")

    @staticmethod
    def _time_of(rec: SinkRecord) -> float:
        """The time retention counts from: published_at, else the ingestion time, else now."""
        when = rec.published_at or rec.ingested_at
        return when.timestamp() if isinstance(when, datetime) else time.time()

    def _refresh_topology(self, client) -> None:
        """Redis Cluster: learn the masters again (after a failover the slot map is stale)."""
        if self.settings.cluster:
            try:
                client.nodes_manager.initialize()
            except redis.RedisError:
                pass  # no node answers yet: the next attempt tries again

    def _master_of(self, client, key: str):
        """The client to send `key`'s writes to: the client itself, or on Redis Cluster the
        connection of the master that holds the key's slot (one connection: WAIT needs it)."""
        if not self.settings.cluster:
            return client
        return client.get_redis_connection(client.get_node_from_key(key))

    def _stored_chunk_counts(self, client, key: str, records: list[SinkRecord]) -> dict[str, int]:
        """How many chunks each chunked document has now (read before overwriting or deleting)."""
        ids = sorted({r.id for r in records if r.op == "delete" or (r.chunked and r.chunk == 0)})
        if not ids:
            return {}
        pipe = client.pipeline(transaction=False)
        for doc_id in ids:
            pipe.execute_command("VGETATTR", key, f"{doc_id}#0")
        counts = {}
        for doc_id, raw in zip(ids, pipe.execute(raise_on_error=False)):
            if isinstance(raw, (bytes, str)):
                try:
                    counts[doc_id] = int(json.loads(raw).get("chunks", 1))
                except (ValueError, AttributeError):
                    counts[doc_id] = 1
            elif isinstance(raw, Exception) and not isinstance(raw, ResponseError):
                raise raw
        return counts

    def _call(self, url: str, fn, retry: bool = False):
        """Run `fn` once (a write: the sink stage retries it) or under the retry policy (setup).
        Transient trouble is SinkBackpressureError with the policy's next wait; credentials,
        permissions and refused commands are SinkError naming the reason."""
        try:
            if retry:
                return self._policy.call_with_retry(fn, lambda exc: None,
                                                    is_retryable=lambda exc: not isinstance(exc, AuthenticationError))
            result = fn()
            self._failures = 0
            return result
        except (AuthenticationError, NoPermissionError) as exc:  # AuthenticationError is a ConnectionError
            raise (explain_redis_error(exc, url, self.settings) or SinkError(str(exc))) from None
        except TRANSIENT as exc:
            self._failures += 1
            raise SinkBackpressureError(f"Redis at {redact_url(url)} is unavailable: {exc}",
                                        retry_after_s=max(0.05, self._backoff.compute(self._failures))) from None
        except redis.RedisError as exc:
            raise (explain_redis_error(exc, url, self.settings)
                   or SinkError(f"Redis at {redact_url(url)} refused a write: {exc}")) from None

    def flush(self, now: float, force: bool = False) -> None:
        pass  # every write is acknowledged by Redis before write() returns

    def durable_offsets(self) -> dict[TP, int]:
        return dict(self._durable)

    def failure(self) -> BaseException | None:
        return None  # no thread of its own: every write runs on the sink stage's

    def revoke(self, partitions: list[TP], flush: bool = True) -> dict[TP, int]:
        return {tp: self._durable.pop(tp) for tp in partitions if tp in self._durable}

    def close(self) -> None:
        for client in {id(c): c for c in self._clients}.values():
            try:
                client.close()
            except redis.RedisError:
                pass


def check_identity(stored: VectorSetIndex, mine: dict[str, Any]) -> None:
    """Refuse an index whose meta names another model, prefix, quantization, dimension or shard
    count than `mine` (a None value is not checked; an index written before a field was recorded
    is checked on the rest). Called by a sink's setup() and by drivers before they start workers.
    Raises IndexMismatchError."""
    differ = [(field, stored.meta[field], str(value)) for field, value in mine.items()
              if value is not None and field in stored.meta and stored.meta[field] != str(value)]
    if differ:
        theirs = ", ".join(f"{f}={v!r}" for f, v, _ in differ)
        ours = ", ".join(f"{f}={v!r}" for f, _, v in differ)
        raise IndexMismatchError(
            f"index {stored.base} was built with {theirs}, but this run has {ours}: their vectors would not be "
            "comparable; write to a new index (redis.index or backfill --target) and move the alias when it is complete")
