"""The rich tables the command line prints (search hits, status, backfill and eval summaries)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

WIDE_COLUMNS = 120  # from this terminal width on, search results show the id and the URL too


def search_table(query: str, hits, index: str, filter_expr: str | None = None, width: int = 80,
                 mode: str = "dense") -> Table:
    """One row a hit: rank, score, title and date, each on one line (a long title is cut with an
    ellipsis); on a terminal of WIDE_COLUMNS or more also the id and the URL. Everything is in
    `search --json`."""
    wide = width >= WIDE_COLUMNS
    title = f"{query!r} in {index}" + (f" where {filter_expr}" if filter_expr else "") + f" ({mode})"
    table = Table(title=title, show_lines=False)
    # the widths are set here: rich's own shrinking squeezes the short columns to nothing first
    fixed = {"#": len(str(max(1, len(hits)))), "score": 6, "id": 24 if wide else 0, "published": 16 if wide else 10}
    columns = 6 if wide else 4
    free = max(20, width - 3 * columns - 1 - sum(fixed.values()))
    url_width = free * 2 // 5 if wide else 0
    table.add_column("#", style="dim", no_wrap=True, width=fixed["#"])
    table.add_column("score", style="cyan", no_wrap=True, width=fixed["score"])
    if wide:
        table.add_column("id", overflow="ellipsis", no_wrap=True, width=fixed["id"])
    table.add_column("title", style="bold", overflow="ellipsis", no_wrap=True, width=free - url_width)
    if wide:
        table.add_column("url", style="blue", overflow="ellipsis", no_wrap=True, width=url_width)
    table.add_column("published", no_wrap=True, width=fixed["published"])
    for i, h in enumerate(hits, 1):
        published = (datetime.fromtimestamp(h.published_at, UTC).strftime("%Y-%m-%d %H:%M" if wide else "%Y-%m-%d")
                     if isinstance(h.published_at, (int, float)) else "")
        doc = h.id + (f"#{h.chunk}" if h.chunk else "")
        row = [str(i), f"{h.score:.4f}"] + ([doc] if wide else []) + [h.title or (doc if not wide else "")]
        table.add_row(*row, *([h.url or ""] if wide else []), published)
    return table


def print_status(report: dict, console: Console) -> None:
    """Print the status report (what `embedworker status` and the demo show)."""
    console.print(status_view(report))


def status_view(report: dict) -> Group:
    """The status report as one renderable (printed once, or refreshed by `status --watch`)."""
    parts: list = []
    k = report["kafka"]
    if "error" in k:
        parts.append(Text(f"kafka: {k['error']}", style="red"))
    else:
        table = Table(title=f"Kafka {k['topic']} (group {k['group']}), dead letters in {k['dlq_topic']}: "
                            f"{k['dlq_records']}")
        for col in ("partition", "committed", "end", "lag"):
            table.add_column(col, justify="right")
        for p in k["partitions"]:
            table.add_row(str(p["partition"]), str(p["committed"]), str(p["end"]), str(p["lag"]))
        table.add_row("all", "", "", str(k["total_lag"]), style="bold")
        parts.append(table)
        if "window_s" in k:
            parts.append(Text(f"over {k['window_s']} s: {k['produced_per_s']} records/s produced, "
                              f"{k['committed_per_s']} committed/s, lag {k['lag_before']} -> {k['total_lag']}"))
        members = Table(title=f"group {k['group']}: {k['group_state']}, {len(k['members'])} member(s)")
        for col in ("client id", "host", "partitions"):
            members.add_column(col)
        for m in k["members"]:
            members.add_row(m["client_id"], m["host"], ",".join(map(str, m["partitions"])))
        parts.append(members)
    a = report.get("actors")
    if a is not None and "error" in a:
        parts.append(Text(f"replicas: {a['error']}", style="yellow"))
    elif a is not None:
        sc = a.get("scaling")
        title = "replicas (through Ray)" if not sc else (
            f"replicas (through Ray): {sc['running']} running, {sc['desired']} desired"
            + (f", {sc['starting']} starting" if sc.get("starting") else "")
            + (f", {sc['draining']} draining" if sc.get("draining") else "")
            + (f"; last change: {sc['last_change']}" if sc.get("autoscale") else ""))
        table = Table(title=title)
        for col in ("replica", "state", "docs/s (1 min)", "lag", "written", "rejected", "in flight", "input", "device",
                    "node"):
            table.add_column(col, justify="right" if col not in ("state", "input", "device", "node") else "left")
        for r in a["actors"]:
            table.add_row(str(r["replica"]), r["state"], str(r.get("docs_per_s_1m", "")), str(r.get("lag", "")),
                          str(r.get("written", "")), str(r.get("rejected", "")), str(r.get("in_flight", "")),
                          _input_state(r), str(r.get("device", "")), str(r.get("node") or "")[:8],
                          style=None if r.get("up") else "red")
        parts.append(table)
    r = report["redis"]
    if "error" in r:
        parts.append(Text(f"redis: {r['error']}", style="red"))
    elif r.get("enabled", True):
        span = (f", {_day(r['oldest'])} to {_day(r['newest'])}, retention {r.get('retention') or 'none'}"
                if r.get("oldest") is not None else "")
        table = Table(title=f"Redis vector sets ({r['total_vectors']} vectors"
                            + (f", alias -> {r['alias']}" if r.get("alias") else "") + span + ")")
        table.add_column("key")
        table.add_column("vectors", justify="right")
        table.add_column("server")
        for key in r["keys"]:
            table.add_row(key["key"], str(key["vectors"]), key["server"])
        parts.append(table)
        if len(r.get("placement", {})) > 1:
            parts.append(Text(f"shards per server ({r['layout']} keys): "
                              + ", ".join(f"{server} {n}" for server, n in sorted(r["placement"].items()))))
    p = report["parquet"]
    if "error" in p:
        parts.append(Text(f"parquet: {p['error']}", style="red"))
    elif p.get("enabled", True):
        kind = f"Delta table, version {p['version']}" if p.get("format") == "delta" else "files"
        parts.append(Text(f"Parquet {p['path']} ({kind}): {p['files']} files, {p['rows']} rows, "
                          f"{p['bytes'] / 1e6:.1f} MB"))
        table = Table(title="Parquet per index")
        for col in ("index", "files", "rows", "MB"):
            table.add_column(col, justify="left" if col == "index" else "right")
        for name, e in sorted(p["indexes"].items()):
            label = name + (" (this config)" if name == p["index"] else "") if name != "-" else "- (before index folders)"
            table.add_row(label, str(e["files"]), str(e["rows"]), f"{e['bytes'] / 1e6:.1f}")
        parts.append(table)
    lx = report.get("lexical")
    if lx and "error" in lx:
        parts.append(Text(f"lexical: {lx['error']}", style="red"))
    elif lx and lx.get("lake_version") is not None:
        snap = lx["snapshot"]
        if snap is None:
            parts.append(Text(f"lexical index of {lx['index']}: no snapshot beside the lake yet (a search or "
                              "the query service builds one)"))
        else:
            behind = ("at the lake's newest version" if not lx["versions_behind"] else
                      f"{lx['versions_behind']} version(s) behind the lake"
                      + (f", the oldest it lacks committed {lx['behind_s']:.0f} s ago" if lx["behind_s"] else ""))
            parts.append(Text(f"lexical index of {lx['index']}: snapshot at lake version {snap['version']} "
                              f"({snap['documents']} documents), {behind}"))
    if "problems" in report:
        for problem in report["problems"]:
            parts.append(Text(f"unhealthy: {problem}", style="red"))
        if not report["problems"]:
            parts.append(Text("healthy", style="green"))
    return Group(*parts)


def summary_table(summary: dict) -> Table:
    table = Table(title="backfill", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in summary.items():
        if key != "replicas":
            table.add_row(key, json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, dict) else str(value))
    return table


def eval_table(report: dict, k: int) -> Table:
    p = report["pipeline"]
    table = Table(title=f"{report['model']}: {report['documents']} documents ({report['vectors']} vectors), "
                        f"{report['queries']} queries, {report['judgements']} judgements; pipeline indexed "
                        f"{p['embedded']} in {p['seconds']} s, rejected {p['rejected']}")
    columns = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}", f"ndcg@{k} diff", f"recall@{k} vs exact", "queries/s", "inserts/s"]
    table.add_column("search")
    for col in columns:
        table.add_column(col, justify="right")
    for row in report["results"]:
        table.add_row(row["name"], *(("" if row.get(c) is None else str(row[c])) for c in columns))
    return table


def eval_modes_table(modes: dict, k: int) -> Table:
    """Dense, lexical and hybrid side by side, over all queries and per query language."""
    table = Table(title=f"dense, lexical (BM25 over the lake: {modes['lexical_documents']} documents, built in "
                        f"{modes['lexical_build_s']} s) and hybrid (RRF k={modes['rrf_k']}, "
                        f"{modes['candidates']} candidates a side)")
    columns = [f"ndcg@{k}", f"recall@{k}", f"mrr@{k}", f"ndcg@{k} vs dense", "ms/query"]
    for name in ("queries", "mode", *columns):
        table.add_column(name, justify="left" if name in ("queries", "mode") else "right")
    for row in modes["rows"]:
        table.add_row(f"{row['queries']} ({row['count']})", row["mode"], *(str(row[c]) for c in columns))
    return table


def _input_state(r: dict) -> str:
    """Whether a replica reads: 'reading', or 'paused' with why (a sink error or a stalled write)."""
    if not r.get("up"):
        return ""
    if r.get("sink_error"):
        return f"paused: {r['sink_error']}"[:80]
    if r.get("stalled_s"):
        return f"paused: sink write running {r['stalled_s']} s"
    return "paused" if r.get("paused") else "reading"


def watch_status(settings, console: Console, interval: float, count: int = 0, actors: bool = True) -> int:
    """`status --watch`: the report refreshed in place every `interval` seconds (each refresh
    reads the offsets that far apart, so rates and lag growth stay current) until Ctrl-C or
    `count` refreshes; returns the last report's exit code."""
    from rich.live import Live

    from pipelines.ops.status import collect_status

    header = Text(f"embedworker status --watch, every {interval:g} s (Ctrl-C to leave)", style="dim")
    report = collect_status(settings, window_s=0, actors=actors)
    refreshes = 0
    try:
        with Live(Group(header, status_view(report)), console=console, auto_refresh=False) as live:
            while not count or refreshes < count:
                report = collect_status(settings, window_s=interval, actors=actors)
                live.update(Group(Text(f"{header.plain} — {report['time']}", style="dim"), status_view(report)),
                            refresh=True)
                refreshes += 1
    except KeyboardInterrupt:
        pass
    return 3 if report["problems"] else 0


def _day(epoch_s: float) -> str:
    """A time the retention set scores, as the operator reads it (UTC, to the minute)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M")
