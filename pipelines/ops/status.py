"""What the pipeline has done: Kafka lag per partition, vectors per vector set, Parquet files and rows.

Returns plain data; the CLI prints it (a table or --json). Each part is collected on its own,
so an unreachable service shows up as an error in its part instead of failing the whole report.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq
from kafka import KafkaAdminClient
from kafka.errors import KafkaError
from redis.crc import key_slot
from redis.exceptions import RedisError

from pipelines.config import EmbedworkerSettings
from pipelines.maintenance.lake_admin import lake_status
from pipelines.maintenance.retention_sweep import index_times
from workers.kafka.clients import kafka_error_message, new_admin
from workers.kafka.offsets import committed_sum, group_offsets, topic_offsets, total_lag
from workers.secrets import redact_url
from workers.settings import model_slug
from workers.sinks.parquet_files import index_of, list_files, open_filesystem
from workers.sinks.redis_client import connect, explain_redis_error
from workers.sinks.vector_sets import alias_target, resolve_index


def group_members(admin: KafkaAdminClient, group: str, topic: str) -> tuple[str, list[dict]]:
    """The consumer group's state and its members (client id, host, partitions of `topic`).
    A group the broker cannot describe yet (new, or its coordinator still loading) has none."""
    try:
        described = admin.describe_groups([group]).get(group) or {}
    except KafkaError as exc:
        return f"unknown ({type(exc).__name__})", []
    members = []
    for m in described.get("members") or []:
        assignment = (m.get("member_assignment") or {}).get("assigned_partitions") or []
        parts = sorted(p for a in assignment if a.get("topic") == topic for p in a.get("partitions", []))
        members.append({"client_id": m.get("client_id"), "host": str(m.get("client_host", "")).lstrip("/"),
                        "partitions": parts})
    state = described.get("group_state") or (f"unknown ({described['error']})" if described.get("error") else "Unknown")
    return state, sorted(members, key=lambda m: m["client_id"] or "")


def kafka_status(settings: EmbedworkerSettings, window_s: float = 0.0) -> dict:
    """Offsets per partition and the group's members; with `window_s` > 0, offsets are read
    twice that far apart, giving produce and commit rates and whether the lag grows."""
    k = settings.kafka
    try:
        admin = new_admin(k, "status", request_timeout_ms=min(k.request_timeout_ms, ANSWER_WITHIN_MS),
                          bootstrap_timeout_ms=min(k.request_timeout_ms, ANSWER_WITHIN_MS))
    except KafkaError as exc:
        return {"error": kafka_error_message(exc, k)}
    try:
        first = group_offsets(admin, k)
        t0 = time.monotonic()
        second = first
        if window_s > 0:
            time.sleep(window_s)
            second = group_offsets(admin, k)
        elapsed = max(1e-6, time.monotonic() - t0)
        ends, committed = second
        partitions = []
        for p in sorted(ends):
            c = committed.get(p)
            lag = ends[p] - (c if c is not None and c >= 0 else 0)
            partitions.append({"partition": p, "committed": c, "end": ends[p], "lag": lag})
        state, members = group_members(admin, k.group_id, k.topic)
        dlq_start, dlq_end = topic_offsets(admin, k.dead_letter_topic)
        out = {"topic": k.topic, "group": k.group_id, "group_state": state, "members": members,
               "partitions": partitions, "total_lag": sum(p["lag"] for p in partitions),
               "dlq_topic": k.dead_letter_topic, "dlq_records": sum(dlq_end[p] - dlq_start.get(p, 0) for p in dlq_end)}
        if window_s > 0:
            lag0 = total_lag(*first)
            out.update(window_s=round(elapsed, 1), lag_before=lag0, lag_growth=out["total_lag"] - lag0,
                       produced_per_s=round((sum(ends.values()) - sum(first[0].values())) / elapsed, 2),
                       committed_per_s=round((committed_sum(committed) - committed_sum(first[1])) / elapsed, 2))
        return out
    except KafkaError as exc:
        return {"error": kafka_error_message(exc, k)}
    finally:
        admin.close()


def redis_status(settings: EmbedworkerSettings) -> dict:
    r = settings.redis
    if not r.enabled:
        return {"enabled": False}
    urls = r.shard_urls or [r.url]
    try:
        # one attempt per command, each answered within ANSWER_WITHIN_MS: status must answer while a
        # server hangs (with the sink's retries it took 43 s through a blackhole; measured by the nemesis)
        quick = r.model_copy(update={"socket_timeout_s": min(r.socket_timeout_s, ANSWER_WITHIN_MS / 1000)})
        clients = {u: connect(quick, u, retry=False) for u in dict.fromkeys(urls)}
        first = clients[urls[0]]
        index = resolve_index(first, settings.redis, model_slug(settings.model.name))
        alias = alias_target(first, settings.redis)
        keys = []
        placement: dict[str, int] = {}  # shards per server
        for i, key in enumerate(index.shard_keys()):
            client = clients[urls[i % len(urls)]]
            if r.cluster:  # where the slot of the key lives: the shards' placement over the masters
                node = client.get_node_from_key(key)
                server, detail = f"{node.host}:{node.port}", f" (master of slot {key_slot(key.encode())})"
            else:
                server, detail = redact_url(urls[i % len(urls)]), ""
            placement[server] = placement.get(server, 0) + 1
            oldest, newest = index_times(client, key)
            keys.append({"key": key, "vectors": int(client.execute_command("VCARD", key) or 0),
                         "server": server + detail, "oldest": oldest, "newest": newest})
        times = [k for k in keys if k["oldest"] is not None]
        return {"index": index.base, "alias": alias, "meta": index.meta, "keys": keys,
                "layout": index.layout, "placement": placement, "total_vectors": sum(k["vectors"] for k in keys),
                "retention": r.retention, "oldest": min((k["oldest"] for k in times), default=None),
                "newest": max((k["newest"] for k in times), default=None)}
    except RedisError as exc:
        return {"error": str(explain_redis_error(exc, urls[0], r) or f"Redis: {exc}")}


def parquet_status(settings: EmbedworkerSettings, topic: str | None = None, partitions: list[int] | None = None) -> dict:
    """Files, rows and bytes per index, and the highest offset per partition of the index this
    config writes: for the lake from its log (`pipelines.maintenance.lake_admin`), for plain files from their
    names and footers (index folders `index=<name>`; "-" for the layout before them)."""
    p = settings.parquet
    if not p.enabled:
        return {"enabled": False}
    if p.format == "delta":
        try:
            return lake_status(settings, topic, partitions)
        except Exception as exc:  # noqa: BLE001 - a status report shows the error instead of failing
            return {"error": f"lake at {p.path}: {exc}"}
    index = settings.redis.index_name(settings.model.name)
    try:
        fs, root = open_filesystem(p.path)
        files = list_files(fs, root)
        indexes: dict[str, dict] = {}
        per_partition: dict[str, int] = {}
        for path, m in files:
            name = index_of(path[len(root):]) or "-"
            entry = indexes.setdefault(name, {"files": 0, "rows": 0, "bytes": 0})
            with fs.open_input_file(path) as f:
                entry["rows"] += pq.ParquetFile(f).metadata.num_rows
                entry["bytes"] += f.size()
            entry["files"] += 1
            if name == index and (topic is None or m["topic"] == topic):
                key = f"{m['topic']}:{int(m['partition'])}"
                per_partition[key] = max(per_partition.get(key, -1), int(m["last"]))
        totals = {k: sum(e[k] for e in indexes.values()) for k in ("files", "rows", "bytes")}
        return {"path": root, **totals, "index": index, "indexes": indexes, "highest_offset": per_partition}
    except Exception as exc:  # noqa: BLE001 - a status report shows the error instead of failing
        return {"error": f"Parquet at {p.path}: {exc}"}


def lexical_status(settings: EmbedworkerSettings) -> dict | None:
    """The lexical index of the configured index as saved beside the lake: the lake version of its
    newest snapshot, its documents, and how far the lake has moved past it (versions, and the age
    of the oldest commit it lacks). None where no lexical index can exist. (A serving replica's
    live index is fresher: its /healthz says how far behind it is.)"""
    from pipelines.lexical.lake_feed import LakeDocumentFeed
    from pipelines.lexical.snapshot import newest
    from pipelines.serving.hybrid import lexical_possible

    if not lexical_possible(settings):
        return None
    index = settings.redis.index_name(settings.model.name)
    try:
        feed = LakeDocumentFeed(settings, index)
        lake_version = feed.latest_version()
        if lake_version is None:
            return {"index": index, "snapshot": None, "lake_version": None}
        snap = newest(feed.filesystem(), index)
        report = {"index": index, "snapshot": snap, "lake_version": lake_version, "versions_behind": None,
                  "behind_s": None}
        if snap is not None:
            report["versions_behind"] = behind = lake_version - snap["version"]
            if behind > 0:
                lacked = feed.commit_time(snap["version"] + 1)
                report["behind_s"] = round(time.time() - lacked, 1) if lacked is not None else None
        return report
    except Exception as exc:  # noqa: BLE001 - a status report shows the error instead of failing
        return {"index": index, "error": f"lexical index of {index}: {exc}"}


ANSWER_WITHIN_MS = 5000  # the longest a service may take to answer one of status's requests
STORE_WITHIN_S = 10.0  # the longest status waits for its reads of the lake (several requests each)
DLQ_STUCK_S = 30.0  # a rejection unacknowledged this long is a problem (one resend period)
STALLED_S = 1.0  # a sink write busy this long is a problem (workers.sink_stall_s pauses the input from 2 s)


def expected_replicas(report: dict, settings: EmbedworkerSettings) -> int:
    """How many replicas should be in the consumer group: those the supervisor last said run
    (a replica removed on purpose, or one still starting, is not missing); without word from it,
    `workers.replicas`, or `autoscale.min_replicas` when autoscaling."""
    scaling = (report.get("actors") or {}).get("scaling")
    if scaling:
        return scaling["running"]
    w = settings.workers
    return w.autoscale.min_replicas if w.autoscale.enabled else w.replicas


def health(report: dict, replicas: int) -> list[str]:
    """Why the pipeline is unhealthy (empty when it is fine): a service that does not answer,
    lag that grew over the window, fewer live replicas than should run, a replica whose rejected
    records the DLQ does not take (for longer than DLQ_STUCK_S), whose polls fail or whose sink
    writes fail (the input is paused until they succeed)."""
    problems = []
    k = report["kafka"]
    if "error" in k:
        problems.append(_named("kafka", k["error"]))
    else:
        if k.get("lag_growth", 0) > 0:
            problems.append(f"lag grew from {k['lag_before']} to {k['total_lag']} in {k['window_s']} s "
                            f"({k['produced_per_s']} produced/s, {k['committed_per_s']} committed/s)")
        if len(k["members"]) < replicas:
            problems.append(f"{len(k['members'])} of {replicas} replica(s) in consumer group {k['group']} "
                            f"({k['group_state']})")
    for actor in report.get("actors", {}).get("actors", []):
        if not actor.get("up"):
            problems.append(f"replica {actor['replica']} is {actor['state']}")
            continue
        if actor.get("dlq_unacked") and actor.get("dlq_unacked_s", 0) >= DLQ_STUCK_S:
            problems.append(f"replica {actor['replica']}: {actor['dlq_unacked']} rejected record(s) not taken by the "
                            f"DLQ topic for {actor['dlq_unacked_s']:.0f} s, their partitions commit no further: "
                            f"{actor.get('dlq_error') or 'no acknowledgement'}")
        if actor.get("source_error"):
            problems.append(f"replica {actor['replica']}: polling fails: {actor['source_error']}")
        if actor.get("sink_error"):
            problems.append(f"replica {actor['replica']}: writes fail, input paused until they succeed: "
                            f"{actor['sink_error']}")
        elif actor.get("stalled_s", 0) >= STALLED_S:
            problems.append(f"replica {actor['replica']}: a write to {actor.get('stalled_sink') or 'a sink'} has not "
                            f"returned for {actor['stalled_s']:.0f} s (input paused; the service neither answers nor fails)")
    for part in ("redis", "parquet"):
        if "error" in report[part]:
            problems.append(_named(part, report[part]["error"]))
    return problems


def _named(part: str, error: str) -> str:
    """A service's error, its name in front unless the sentence begins with it ("Kafka: …")."""
    return error if error.lower().startswith(part) else f"{part}: {error}"


def answered_within(seconds: float, reads: dict[str, tuple[str, Callable[[], Any]]]) -> dict[str, Any]:
    """{key: read()} for reads of (what, read), all run at once, each in a daemon thread; one that
    has not returned `seconds` later gives {"error": "<what>: no answer within …"} (its thread goes
    on, its answer dropped): a status report answers while a store hangs. A read's exception is
    raised here."""
    boxes: dict[str, dict] = {key: {} for key in reads}

    def run(key: str, read: Callable[[], Any]) -> None:
        try:
            boxes[key]["result"] = read()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            boxes[key]["error"] = exc

    threads = {key: threading.Thread(target=run, args=(key, read), name=f"status-{key}", daemon=True)
               for key, (_, read) in reads.items()}
    for thread in threads.values():
        thread.start()
    deadline = time.monotonic() + seconds
    out: dict[str, Any] = {}
    for key, thread in threads.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if "error" in boxes[key]:
            raise boxes[key]["error"]
        out[key] = boxes[key]["result"] if "result" in boxes[key] else {
            "error": f"{reads[key][0]}: no answer within {seconds:g} s (the store is slow or unreachable)"}
    return out


def collect_status(settings: EmbedworkerSettings, window_s: float = 0.0, actors: bool = False,
                   check_health: bool = True) -> dict:
    """Everything `embedworker status` shows. `actors` also asks the running replicas through
    Ray; `check_health` adds "problems" (the health check's reasons, empty when healthy)."""
    kafka = kafka_status(settings, window_s)
    partitions = [p["partition"] for p in kafka.get("partitions", [])]
    # The lake's reads go through the object store's own retries: together they are given
    # STORE_WITHIN_S (an S3 answering 1 s late made them take 14 s; measured by the nemesis).
    lake = f"lake at {settings.parquet.path}"
    report = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "kafka": kafka, "redis": redis_status(settings),
              **answered_within(STORE_WITHIN_S, {
                  "parquet": (lake, lambda: parquet_status(settings, settings.kafka.topic, partitions)),
                  "lexical": (f"the lexical index beside the {lake}", lambda: lexical_status(settings))})}
    if actors:
        from pipelines.stream.replica_status import actor_status

        report["actors"] = actor_status(settings)
    if check_health:
        report["problems"] = health(report, expected_replicas(report, settings))
    return report
