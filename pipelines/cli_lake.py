"""The command line of the lake: `embedworker lake compact | vacuum | checkpoint` and `embedworker
restore` (part of the one `embedworker` entry point; `pipelines.cli` registers these)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=False)
err_console = Console(stderr=True)


def add_commands(sub, command, settings_of) -> None:
    """Register the subcommands in `sub` through the CLI's `command(name, fn, help, parent=…)`
    helper; `settings_of` is its settings loader."""

    def lake_compact(args) -> int:
        from pipelines.lake import compact

        result = compact(settings_of(args), older_than_days=args.days, index=args.index)
        return _print(args, result, f"compacted {result['days']} day(s): {result['files_removed']} files into "
                                    f"{result['files_added']} ({result['seconds']} s, table version {result['version']})")

    def lake_vacuum(args) -> int:
        from pipelines.lake import vacuum

        result = vacuum(settings_of(args), retention_hours=args.retention_hours, dry_run=args.dry_run)
        verb = "would remove" if result["dry_run"] else "removed"
        return _print(args, result, f"{verb} {result['files']} file(s) unused for {result['retention_hours']} h")

    def lake_checkpoint(args) -> int:
        from pipelines.lake import checkpoint

        result = checkpoint(settings_of(args))
        return _print(args, result, f"checkpoint written at table version {result['version']}")

    def restore(args) -> int:
        from pipelines.backfill import switch_alias
        from pipelines.ray_session import resolve_model
        from pipelines.restore import restore_index

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
        q.add_argument("--json", action="store_true")

    p = command("restore", restore, "rebuild an index's vector sets in Redis from the lake (no model needed)")
    p.add_argument("--index", default=None, help="the index to restore (default: the configured one)")
    p.add_argument("--target", default=None, help="write its vectors under this index name (default: the same)")
    p.add_argument("--alias", action="store_true", help="point the search alias at the restored index")
    p.add_argument("--json", action="store_true")


def _print(args, result: dict, sentence: str) -> int:
    if args.json:
        print(json.dumps(result, ensure_ascii=False, default=str))
    else:
        console.print(sentence, highlight=False)
    return 0
