"""Backfills of files through Ray Data, resumable.

Files: the inputs (JSONL or Parquet; local paths or fsspec URIs) are cut into units
(`workers.batch.units`); units without a done marker go through `map_batches` with
`UnitEmbedder` on an actor pool (`workers.num_gpus` per actor, 1..`workers.replicas` actors);
each unit's vectors go to the same sinks as streaming. Rejected records go to the job's
rejects file with their reason codes. `--target NAME` writes a new vector-set index and, at the
end, points the alias `{prefix}:current` at it, so searches move to it in one step.
(Replays of a topic: `pipelines.batch.replay`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime

import fsspec
from pydantic import ValidationError

from pipelines.batch.lake_input import export_documents, is_lake
from pipelines.config import EmbedworkerSettings
from pipelines.ray_session import init_ray
from workers.batch.units import Unit, UnitEmbedder, plan_units, write_json_atomic
from workers.errors import EmbedworkerError
from workers.settings import RedisSettings
from workers.sinks.redis_client import check_reachable, connect
from workers.sinks.redis_vset import check_identity
from workers.sinks.vector_sets import VectorSetIndex, alias_key


class BackfillError(EmbedworkerError):
    """The backfill cannot run (no input files, an unreadable state folder, a failed unit)."""


def resolve_inputs(pattern: str) -> list[str]:
    """Every file matching the glob (local or URI), sorted; raises BackfillError if none."""
    fs, inner = fsspec.core.url_to_fs(pattern)
    found = sorted(p for p in fs.glob(inner) if fs.isfile(p))
    if not found:
        raise BackfillError(f"--input {pattern!r} matches no file")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return [p if protocol in ("file", "local") else f"{protocol}://{p}" for p in found]


def with_target(settings: EmbedworkerSettings, target: str | None) -> EmbedworkerSettings:
    if not target:
        return settings
    try:
        redis = RedisSettings.model_validate({**settings.redis.model_dump(), "index": target})
    except ValidationError as exc:
        raise BackfillError(f"--target: {exc.errors()[0]['msg']}") from None
    return settings.model_copy(update={"redis": redis})


class BackfillJob:
    def __init__(self, settings: EmbedworkerSettings, pattern: str, target: str | None = None,
                 state_dir: str | None = None, unit_mb: float = 8.0, source_index: str | None = None):
        """`pattern`: a glob of JSONL/Parquet files, or a Delta table (the lake: the newest
        documents of `source_index` are exported to JSONL in the state folder first)."""
        self.settings = with_target(settings, target)
        self.target = target
        settings.parquet.s3.configure_fsspec()
        root = state_dir or f"{self.settings.parquet.path.rstrip('/')}/_backfill"
        if is_lake(pattern, self.settings):
            self.paths = export_documents(self.settings, pattern, source_index, f"{root}/lake-input", exclude=target)
        else:
            self.paths = resolve_inputs(pattern)
        index = self.settings.redis.index_name(self.settings.model.name)
        digest = hashlib.sha1("\n".join(self.paths + [index, self.settings.model.name]).encode()).hexdigest()
        self.job_id = digest[:12]
        self.state_dir = f"{root}/{self.job_id}"
        self.unit_bytes = max(1024, int(unit_mb * 1024 * 1024))
        self.fs, self._state_inner = fsspec.core.url_to_fs(self.state_dir)

    def plan(self) -> tuple[list[Unit], list[Unit], dict]:
        """(all units, units still to do, the job record). Creates the job record on first run."""
        units = plan_units(self.paths, self.unit_bytes)
        job_file = f"{self._state_inner}/job.json"
        if self.fs.exists(job_file):
            with self.fs.open(job_file) as f:
                job = json.load(f)
        else:
            job = {"job_id": self.job_id, "inputs": self.paths, "day": datetime.now(UTC).strftime("%Y-%m-%d"),
                   "model": self.settings.model.name, "index": self.settings.redis.index, "units": len(units)}
            write_json_atomic(f"{self.state_dir}/job.json", job)
        done = self.done_units()
        return units, [u for u in units if u.key not in done], job

    def done_units(self) -> dict[str, dict]:
        out = {}
        for path in self.fs.glob(f"{self._state_inner}/units/*.json"):
            with self.fs.open(path) as f:
                marker = json.load(f)
            out[marker["unit"]["key"]] = marker
        return out

    def run(self, on_start: Callable[[int, int, dict], None] | None = None,
            on_unit: Callable[[dict], None] | None = None, min_actors: int = 1,
            max_actors: int | None = None) -> dict:
        """Embed every unit not done yet. Calls on_start(total units, already done, done totals)
        and on_unit(stats) per finished unit. Returns the summary of the whole job."""
        import ray.data

        units, pending, job = self.plan()
        if self.settings.redis.enabled:
            check_reachable(self.settings.redis)  # else Ray Data retries the units for as long as Redis is away
            self.check_index()
        done_before = self.done_units()
        if on_start:
            on_start(len(units), len(units) - len(pending), _totals(done_before.values()))
        if pending:
            init_ray(self.settings)
            ctx = ray.data.DataContext.get_current()
            ctx.enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)
            w = self.settings.workers
            kwargs = dict(model=self.settings.model, documents=self.settings.documents, redis=self.settings.redis,
                          parquet=self.settings.parquet, batching=self.settings.batching,
                          state_dir=self.state_dir, job_id=self.job_id, day=job["day"],
                          max_message_bytes=self.settings.kafka.max_message_bytes)
            pool = (min(min_actors, len(pending)), max(1, min(max_actors or w.replicas, len(pending))))
            ds = ray.data.from_items([{"unit": json.dumps(asdict(u))} for u in pending])
            ds = ds.map_batches(UnitEmbedder, batch_size=1, fn_constructor_kwargs=kwargs,
                                compute=ray.data.ActorPoolStrategy(min_size=min(pool), max_size=max(pool)),
                                num_gpus=w.num_gpus, num_cpus=w.num_cpus)
            for row in ds.iter_rows():
                if on_unit:
                    on_unit(row)
        if self.target:
            self.check_complete(units)
            switch_alias(self.settings, self.target)
        summary = _totals(self.done_units().values())
        summary.update(job_id=self.job_id, units=len(units), state_dir=self.state_dir,
                       rejects_file=self.merge_rejects(), index=self.settings.redis.index_name(self.settings.model.name), alias_switched=bool(self.target))
        return summary

    def check_index(self) -> None:
        """Before any unit runs: the index written to must not be another model's (a unit's
        actor would refuse it too, but inside Ray Data). Raises IndexMismatchError."""
        r, m = self.settings.redis, self.settings.model
        client = connect(r, r.url)
        try:
            stored = VectorSetIndex.stored(client, r, r.index_name(m.name))
        finally:
            client.close()
        check_identity(stored, {"model": m.name, "document_prefix": m.document_prefix, "quantization": r.quantization,
                                "shards": r.shards})

    def check_complete(self, units: list[Unit]) -> None:
        """Before the alias moves to the target: every unit has its done marker (written and
        rejected records cover the input) and, when anything was embedded, the index holds
        vectors. Raises BackfillError; the alias then stays where it was."""
        done = self.done_units()
        missing = [u.key for u in units if u.key not in done]
        totals = _totals(done.values())
        vectors = index_size(self.settings, self.target) if self.settings.redis.enabled and self.target else None
        if missing or (vectors == 0 and totals["embedded"] > 0):
            raise BackfillError(
                f"backfill into index {self.target!r} fell short: {len(missing)} of {len(units)} units unfinished, "
                f"{totals['embedded']} embedded, {totals['deleted']} deleted and {totals['rejected']} rejected of "
                f"{totals['records']} records read, {vectors} vectors in the index; the search alias was not moved "
                "(run the same backfill again: finished units are skipped)")

    def merge_rejects(self) -> str | None:
        """All units' rejects in one JSONL file (rebuilt from the per-unit files)."""
        parts = sorted(self.fs.glob(f"{self._state_inner}/rejects/*.jsonl"))
        if not parts:
            return None
        target = f"{self._state_inner}/rejects.jsonl"
        with self.fs.open(target, "w") as out:
            for part in parts:
                with self.fs.open(part, "r") as f:
                    out.write(f.read())
        return target


def _totals(markers) -> dict:
    out = {"records": 0, "embedded": 0, "deleted": 0, "rejected": 0}
    for m in markers:
        for k in out:
            out[k] += int(m.get(k, 0))
    return out


def switch_alias(settings: EmbedworkerSettings, index: str) -> None:
    """Point `{prefix}:current` at `index` (one SET: searches move in one step)."""
    client = connect(settings.redis, settings.redis.url)
    meta = VectorSetIndex(settings.redis.key_prefix, index, settings.redis.shards).meta_key
    if not client.exists(meta):
        raise BackfillError(f"index {index!r} has no metadata ({meta}): nothing was written to it")
    client.set(alias_key(settings.redis), index)


def index_size(settings: EmbedworkerSettings, index: str) -> int:
    """Vectors in every shard of `index` (shard i on `shard_urls[i % n]`, as the sink places it)."""
    r = settings.redis
    urls = r.shard_urls or [r.url]
    clients = {u: connect(r, u) for u in dict.fromkeys(urls)}
    try:
        keys = VectorSetIndex.stored(clients[urls[0]], r, index).shard_keys()
        return sum(int(clients[urls[i % len(urls)]].execute_command("VCARD", key) or 0) for i, key in enumerate(keys))
    finally:
        for client in clients.values():
            client.close()
