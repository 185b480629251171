"""What the running replicas report about themselves, found through Ray (for `embedworker status`).

`embedworker run` names each replica `embedworker:<group>:<replica>:<run id>` in the configured
Ray namespace. This module connects to that Ray cluster as a short-lived second driver, finds
the replicas of the configured group and asks each for its stats (state, docs/s over the last
minute, lag, counts) and the group's scaling state (desired and running replicas). Without a reachable Ray cluster it says so instead of failing.
"""

from __future__ import annotations

import logging

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError

from pipelines.config import EmbedworkerSettings
from pipelines.ray_session import ACTOR_PREFIX

log = logging.getLogger("embedworker.stream")


def replica_actor_names(settings: EmbedworkerSettings) -> list[tuple[int, str]]:
    """(replica, actor name) of this group's replicas in the namespace, newest run last."""
    prefix = f"{ACTOR_PREFIX}{settings.kafka.group_id}:"
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=False):
        name = entry if isinstance(entry, str) else entry.get("name", "")
        if name.startswith(prefix):
            replica, _, _run = name[len(prefix):].partition(":")
            if replica.isdigit():
                found.append((int(replica), name))
    return sorted(found)


def actor_status(settings: EmbedworkerSettings, timeout_s: float = 5.0) -> dict:
    """{"actors": [...]} with one entry per replica found, or {"error": reason} when no Ray
    cluster answers (status then relies on the Kafka group's members alone)."""
    connected_here = False
    if not ray.is_initialized():
        if not settings.ray.address:
            from pipelines.ray_session import quiet_local_ray_auth

            quiet_local_ray_auth()
        try:
            ray.init(address=settings.ray.address or "auto", namespace=settings.ray.namespace,
                     include_dashboard=False, log_to_driver=False, configure_logging=False)
            connected_here = True
        except (ConnectionError, RuntimeError, ValueError) as exc:
            return {"error": f"no Ray cluster at {settings.ray.address or 'auto'}: {exc}".splitlines()[0]}
    try:
        actors, scaling = [], None
        for replica, name in replica_actor_names(settings):
            entry = {"replica": replica, "name": name}
            try:
                stats = ray.get(ray.get_actor(name).stats.remote(), timeout=timeout_s)
                entry.update(replica_entry(stats))
                told = stats.get("scaling")
                if told and (scaling is None or told["at"] > scaling["at"]):
                    scaling = told  # the newest the supervisor told any replica
            except (ValueError, GetTimeoutError, RayActorError, ActorDiedError, ActorUnavailableError) as exc:
                entry.update(state=f"unavailable ({type(exc).__name__})", up=False)
            actors.append(entry)
        return {"actors": actors, "scaling": scaling}
    finally:
        if connected_here:
            ray.shutdown()


def replica_entry(stats: dict) -> dict:
    """What status keeps of a replica's stats (`EmbeddingWorker.stats()`), for a replica that answered."""
    return dict(state=stats.get("state"), docs_per_s_1m=stats.get("docs_per_s_1m", 0.0),
                lag=stats.get("committed_lag", stats.get("lag")), written=stats.get("written", 0),
                rejected=stats.get("rejected", 0), in_flight=stats.get("in_flight", 0),
                paused=bool(stats.get("paused")), sink_error=stats.get("sink_error"),
                stalled_s=stats.get("stalled_s", 0.0), stalled_sink=stats.get("stalled_sink"),
                device=stats.get("device"), node=stats.get("node"),
                dlq_unacked=stats.get("dlq_unacked", 0), dlq_unacked_s=stats.get("dlq_unacked_s", 0.0),
                dlq_error=stats.get("dlq_error"), source_error=stats.get("source_error"), up=True)


def log_replica_summary(stats: list[dict], last: dict, interval: float) -> dict:
    """The supervisor's periodic line per replica (rate since the last one, lag, counts, why it
    is paused); returns the written counts for the next call."""
    counts: dict = {}
    for s in stats:
        counts[s.get("replica")] = s.get("written", 0)
        rate = (s.get("written", 0) - last.get(s.get("replica"), 0)) / max(interval, 1e-6)
        log.info("replica %s %s: %.1f docs/s, lag %s (committed), consumed %s, written %s, rejected %s, in flight %s, "
                 "padding %s%s", s.get("replica"), s.get("state"), rate, s.get("committed_lag", "?"), s.get("consumed", 0),
                 s.get("written", 0), s.get("rejected", 0), s.get("in_flight", 0), s.get("padding_ratio", 0),
                 (f", paused, sink error: {s['sink_error']}" if s.get("sink_error") else
                  f", paused: a sink write has run {s['stalled_s']} s" if s.get("stalled_s") else
                  ", paused" if s.get("paused") else ""),
                 extra={"fields": {"replica": s.get("replica"), "docs_per_s": round(rate, 2),
                                   "lag": s.get("committed_lag"), "rejected": s.get("rejected", 0),
                                   "padding_ratio": s.get("padding_ratio", 0)}})
    return counts
