"""Fenced writes to a vector set: every element remembers the Kafka record it came from, and a
write from an older record of the same partition is refused, in the same round trip.

A replica that lost a partition (frozen past the session timeout, then thawed) may still hold
that partition's records and write them in the moment before it learns of the loss; its new
owner has meanwhile written newer versions of the same documents. So each write is a Lua script
(`FENCED_WRITE`, one call per up to OPS_PER_CALL elements of one shard) that, per element:

- reads the element's source from the shard's sources hash (`sources_key`): `topic:partition:offset`
  of the record that last wrote it;
- skips the element when that source is the same topic and partition at a higher offset (a
  stale write: counted, not an error);
- otherwise applies it (VADD, or VREM for a deletion) and records the new source, with the
  element's time in the retention set when retention is on.

A removed element (a deletion, a chunk a shorter version no longer has, a document older than
the retention) keeps its source as a tombstone for TOMBSTONE_TTL_S (a hash field with a TTL), so
a stale write cannot bring it back; a later write clears the TTL. Records of another source (a
backfill's files, another topic) are never compared: the last write wins, as before. Offsets are
compared as Lua numbers (exact below 2^53).

The script runs atomically, so no write of the new owner can slip between the check and the
write; a call holds Redis for its elements' inserts only (OPS_PER_CALL of them), and calls are
pipelined. VADD inside a script does not use the insert threads that `redis.cas` enables, so
with `cas: true` inserts run on the main thread. `bench/hostpath.py` measures what the fence
costs Redis per insert (bench/RESULTS.md). The sources hash takes one field per element (tens of
bytes, against ~1.5-2.6 KB for the vector itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import orjson

from workers.sinks.base import SinkRecord

RESERVED_ATTRS = ("id", "chunk", "chunks", "title", "url", "source", "lang", "published_at", "model")
OPS_PER_CALL = 16            # elements per script call: Redis is held for at most this many inserts
TOMBSTONE_TTL_S = 7 * 86400  # how long a removed element's source refuses stale writes
FIELDS = 11                  # arguments per element in a call (removals pad theirs)

FENCED_WRITE = """
local ttl = tonumber(ARGV[1])
local n = 0
for i = 2, #ARGV, 11 do
  local kind, element, src, offset = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local cur = redis.call('HGET', KEYS[2], element)
  local stale = false
  if cur then
    local csrc, coff = string.match(cur, '^(.*):(%d+)$')
    stale = csrc == src and tonumber(coff) > tonumber(offset)
  end
  if stale then
    n = n + 1
  elseif kind == 'A' then
    local args = {'VADD', KEYS[1], 'FP32', ARGV[i + 5], element, ARGV[i + 6], 'EF', ARGV[i + 7],
                  'SETATTR', ARGV[i + 8], 'M', ARGV[i + 9]}
    if ARGV[i + 10] == 'CAS' then table.insert(args, 'CAS') end
    redis.call(unpack(args))
    redis.call('HSET', KEYS[2], element, src .. ':' .. offset)
    if KEYS[3] ~= KEYS[1] and ARGV[i + 4] ~= '' then
      redis.call('ZADD', KEYS[3], ARGV[i + 4], element)
    end
  else
    redis.call('VREM', KEYS[1], element)
    redis.call('HSET', KEYS[2], element, src .. ':' .. offset)
    redis.call('HPEXPIRE', KEYS[2], ttl, 'FIELDS', 1, element)
    if KEYS[3] ~= KEYS[1] then redis.call('ZREM', KEYS[3], element) end
  end
end
return n
"""


@dataclass(slots=True)
class ElementOp:
    """One element's write: an add (VADD with its arguments) or a removal."""

    add: bool
    element: str
    source: str          # "topic:partition" of the record
    offset: int
    time: float | None = None   # the element's time in the retention set (adds, with retention)
    blob: bytes = b""
    quantization: str = ""
    attributes: bytes = b""

    def args(self, ef: int, m: int, cas: bool) -> list:
        if not self.add:
            return ["R", self.element, self.source, self.offset, "", "", "", "", "", "", ""]
        return ["A", self.element, self.source, self.offset, "" if self.time is None else repr(self.time),
                self.blob, self.quantization, ef, self.attributes, m, "CAS" if cas else ""]


def sources_key(key: str) -> str:
    """The hash of each element's source beside shard `key`: in the key's slot (its hash tag, or
    the key itself as the tag), as the retention set is."""
    return f"{key}:sources" if "{" in key else f"{key}:{{{key}}}:sources"


def script_calls(sha: str, key: str, times_key: str | None, ops: list[ElementOp], ef: int, m: int,
                 cas: bool) -> list[tuple]:
    """EVALSHA commands writing `ops` in order, OPS_PER_CALL at a time (KEYS: the shard, its
    sources, its retention set or the shard again when there is none)."""
    calls = []
    keys = (key, sources_key(key), times_key or key)
    for start in range(0, len(ops), OPS_PER_CALL):
        args: list = [TOMBSTONE_TTL_S * 1000]
        for op in ops[start:start + OPS_PER_CALL]:
            args.extend(op.args(ef, m, cas))
        calls.append(("EVALSHA", sha, 3, *keys, *args))
    return calls


def element_attributes(rec: SinkRecord, model_slug: str) -> bytes:
    """The element's SETATTR JSON: the document's metadata (published_at as epoch seconds, so
    `VSIM … FILTER '.published_at > …'` works), its id, chunk and the model."""
    attrs = {k: v for k, v in rec.attrs.items() if k not in RESERVED_ATTRS and v is not None}
    attrs.update(id=rec.id, chunk=rec.chunk, chunks=rec.chunks, model=model_slug)
    for name in ("title", "url", "source", "lang"):
        if getattr(rec, name):
            attrs[name] = getattr(rec, name)
    if isinstance(rec.published_at, datetime):
        attrs["published_at"] = int(rec.published_at.timestamp())
    try:
        return orjson.dumps(attrs)
    except TypeError:  # an integer over 64 bits: the standard encoder takes it
        return json.dumps(attrs, ensure_ascii=False).encode()
