"""`embedworker demo`: the bundled sample feed through the real pipeline on this machine.

Resets the demo's own topic, group, keys and folder; produces the feed (204 Korean and English
news items and 6 malformed lines); runs the streaming worker on a local Ray until every record
is committed; prints the status, three searches, and how to stop the services.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from kafka.errors import KafkaError
from rich.console import Console

from pipelines.config import EmbedworkerSettings, resolve_model
from pipelines.ops.produce import produce_file
from pipelines.ops.status import collect_status
from pipelines.serving.hybrid import TextSearch
from pipelines.stream.supervisor import StreamSupervisor
from workers.kafka.clients import new_admin
from workers.sinks.redis_client import connect

FEED = Path(__file__).parents[1] / "demo_data" / "news_sample.jsonl"


def reset(settings: EmbedworkerSettings) -> None:
    """Remove what an earlier demo run left: topics, the group's offsets, keys, Parquet files."""
    k = settings.kafka
    admin = new_admin(k, "demo")
    try:
        existing = [t for t in (k.topic, k.dead_letter_topic) if t in admin.list_topics()]
        if existing:
            admin.delete_topics(existing)
        try:
            admin.delete_groups([k.group_id])
        except KafkaError:
            pass  # no such group yet
        deadline = time.monotonic() + 30
        while any(t in admin.list_topics() for t in existing) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        admin.close()
    client = connect(settings.redis, settings.redis.url)
    keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    shutil.rmtree(settings.parquet.path, ignore_errors=True)


def run_demo(settings: EmbedworkerSettings, console: Console) -> int:
    if torch.cuda.is_available():
        settings = settings.model_copy(update={"workers": settings.workers.model_copy(update={"num_gpus": 1})})
    console.rule("[bold]embedworker demo")
    settings, note = resolve_model(settings)
    if note:
        console.print(f"[yellow]Note:[/yellow] {note}. Vectors come from that model; with the hub reachable "
                      "or the model cached, the demo uses KoEn-E5-Tiny.")
    console.print(f"model: [bold]{settings.model.name}[/bold]; device: "
                  f"{'GPU' if settings.workers.num_gpus else 'CPU'}")
    reset(settings)
    sent = produce_file(settings, FEED, partitions=3)["sent"]
    console.print(f"produced {sent} records from {FEED.name} to [bold]{settings.kafka.topic}[/bold]")

    started = time.monotonic()
    supervisor = StreamSupervisor(settings)
    with console.status("starting Ray and the worker, then indexing the feed ..."):
        supervisor.start()
        results = supervisor.supervise(until=lambda: _indexed(settings), poll_s=1.0)
    console.print(f"indexed in {time.monotonic() - started:.1f} s (worker start included): "
                  + ", ".join(f"replica {r.get('replica')}: {r.get('written', 0)} written, "
                              f"{r.get('rejected', 0)} rejected" for r in results))

    from pipelines.cli.tables import print_status, search_table

    print_status(collect_status(settings, check_health=False), console)
    search = TextSearch.open(settings)  # hybrid: the lexical index is built from the lake just written
    week_ago = int(datetime(2026, 11, 20, tzinfo=UTC).timestamp())
    for query, filter_expr in (("반도체 수출이 늘었다", None), ("typhoon cancels flights", None),
                               ("interest rates", f'.lang == "ko" and .published_at >= {week_ago}')):
        hits = search(query, 5, filter_expr)
        console.print(search_table(query, hits, search.searcher.index.base, filter_expr, console.width, search.mode))
    console.print("Try: [bold].venv/bin/embedworker search -c configs/demo.yaml \"전기차 보조금\"[/bold]")
    console.print("Stop the local Kafka and Redis with [bold]make down[/bold] (they stay up for more tries).")
    return 0


def _indexed(settings: EmbedworkerSettings) -> bool:
    from pipelines.ops.status import kafka_status

    k = kafka_status(settings)
    parts = k.get("partitions") or []
    return bool(parts) and all(p["lag"] == 0 and p["committed"] == p["end"] for p in parts) and k["dlq_records"] > 0
