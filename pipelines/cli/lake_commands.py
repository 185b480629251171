"""The command line of day-2 operations: `embedworker lake compact | vacuum | checkpoint`,
`embedworker restore` and `embedworker dlq show | redrive` (part of the one `embedworker` entry
point; `pipelines.cli.main` registers these)."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=False)
err_console = Console(stderr=True)


def add_commands(sub, command, settings_of) -> None:
    """Register the subcommands in `sub` through the CLI's `command(name, fn, help, parent=…)`
    helper; `settings_of` is its settings loader."""

    def lake_compact(args) -> int:
        from pipelines.maintenance.lake_admin import compact

        result = compact(settings_of(args), older_than_days=args.days, index=args.index)
        return _print(args, result, f"compacted {result['days']} day(s): {result['files_removed']} files into "
                                    f"{result['files_added']} ({result['seconds']} s, table version {result['version']})")

    def lake_vacuum(args) -> int:
        from pipelines.maintenance.lake_admin import vacuum

        result = vacuum(settings_of(args), retention_hours=args.retention_hours, dry_run=args.dry_run)
        verb = "would remove" if result["dry_run"] else "removed"
        return _print(args, result, f"{verb} {result['files']} file(s) unused for {result['retention_hours']} h")

    def lake_checkpoint(args) -> int:
        from pipelines.maintenance.lake_admin import checkpoint

        result = checkpoint(settings_of(args))
        return _print(args, result, f"checkpoint written at table version {result['version']}")

    def restore(args) -> int:
        from pipelines.batch.backfill import switch_alias
        from pipelines.config import resolve_model
        from pipelines.maintenance.restore import restore_index

        settings, note = resolve_model(settings_of(args))  # the index is named after the model used
        if note:
            err_console.print(note, style="yellow", highlight=False)
        columns = [TextColumn("[bold]restore"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=err_console, disable=args.json) as progress:
            task = progress.add_task("restore", total=None)
            result = restore_index(settings, args.index, args.target,
                                   on_progress=lambda done, total: progress.update(task, completed=done, total=total))
        if args.alias:
            switch_alias(settings, args.target or result["index"])
            result["alias"] = args.target or result["index"]
        return _print(args, result, f"restored {result['vectors']} vectors of index {result['index']} into "
                                    f"{result['target']} ({result['deleted']} deletions applied) in {result['seconds']} s, "
                                    f"{result['vectors_per_s']} vectors/s" + (f"; alias -> {result['alias']}"
                                                                               if args.alias else ""))

    lake = sub.add_parser("lake", help="maintain the lake (the Delta table of parquet.path)")
    lake_sub = lake.add_subparsers(dest="lake_command", required=True)
    c = command("compact", lake_compact, "merge each closed day's files into files of parquet.target_file_mb",
                parent=lake_sub)
    c.add_argument("--days", type=int, default=1, help="days that ended at least this many days ago (default 1)")
    c.add_argument("--index", default=None, help="only this index")
    v = command("vacuum", lake_vacuum, "delete files no recent version needs (replaced, or never committed)",
                parent=lake_sub)
    v.add_argument("--retention-hours", type=int, default=None,
                   help="keep files removed less than this long ago (default parquet.vacuum_retention_hours)")
    v.add_argument("--dry-run", action="store_true", help="list, do not delete")
    k = command("checkpoint", lake_checkpoint, "write a checkpoint of the current version", parent=lake_sub)
    for q in (c, v, k):
        q.add_argument("--json", action="store_true", help="print the result as JSON")

    def dlq_show(args) -> int:
        from pipelines.ops.dlq import show

        result = show(settings_of(args), reason=args.reason, limit=args.limit)
        if args.json:
            print(json.dumps(result, ensure_ascii=False))
            return 0
        console.print(f"{result['total']} dead letter(s) in {result['topic']}", highlight=False)
        for title, counts in (("reason", result["by_reason"]), ("source partition", result["by_source_partition"])):
            table = Table(title=f"by {title}")
            table.add_column(title)
            table.add_column("records", justify="right")
            for key, n in counts.items():
                table.add_row(key, str(n))
            console.print(table)
        table = Table(title=f"records{' of ' + args.reason if args.reason else ''} (first {args.limit})")
        for col in ("dlq offset", "reason", "message", "source", "key", "value"):
            table.add_column(col, overflow="fold")
        for r in result["records"]:
            table.add_row(f"{r['dlq_partition']}:{r['dlq_offset']}", r["reason"], r["message"] or "",
                          f"{r['source']}:{r['source_offset']}", r["key"] or "",
                          r["value"][:80] + (" (cut)" if r["truncated"] else ""))
        console.print(table)
        return 0

    def dlq_redrive(args) -> int:
        from pipelines.ops.dlq import redrive

        result = redrive(settings_of(args), reason=args.reason, since=args.since, to=args.to, dry_run=args.dry_run)
        verb = "would re-drive" if args.dry_run else "re-drove"
        return _print(args, result, f"{verb} {result['redriven']} record(s) to {result['to']}; "
                                    f"{result['already_redriven']} re-driven before, {result['before_since']} older than "
                                    f"--since, {result['truncated_not_redriven']} held cut in the DLQ (not re-driven)")

    dlq = sub.add_parser("dlq", help="the dead-letter topic: counts and records, and re-driving them")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    d = command("show", dlq_show, "counts per reason and source partition, then the records", parent=dlq_sub)
    d.add_argument("--reason", default=None, help="only the records of this reason code (e.g. too_large, invalid_json)")
    d.add_argument("--limit", type=int, default=20, help="records to print (default 20)")
    d.add_argument("--json", action="store_true", help="print the records as JSON")
    r = command("redrive", dlq_redrive, "produce dead letters again to their source topic (each once)",
                parent=dlq_sub)
    r.add_argument("--reason", default=None, help="only this reason code")
    r.add_argument("--since", type=_timestamp, default=None,
                   help="only records dead-lettered since this RFC 3339 time (older ones of the reason are passed over)")
    r.add_argument("--to", default=None, help="produce to this topic instead of each record's source topic")
    r.add_argument("--dry-run", action="store_true", help="count, produce nothing, remember nothing")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = command("restore", restore, "rebuild an index's vector sets in Redis from the lake (no model needed)")
    p.add_argument("--index", default=None, help="the index to restore (default: the configured one)")
    p.add_argument("--target", default=None, help="write its vectors under this index name (default: the same)")
    p.add_argument("--alias", action="store_true", help="point the search alias at the restored index")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _timestamp(text: str) -> datetime:
    """An RFC 3339 time with an offset (argparse names the option when this fails)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time with an offset "
                                         "(e.g. 2026-11-29T09:00:00+09:00)")
    return value


def _print(args, result: dict, sentence: str) -> int:
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        console.print(sentence, highlight=False)
    return 0
