"""The documentation cannot drift from the code: the generated references (configuration, command
line, metrics) equal what docs/generate.py makes from the code now, every setting has a
description, every dead-letter reason code is documented, and the README stays short.

After adding or changing a setting, a command or option, or a metric: `.venv/bin/python docs/generate.py`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generate():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_references_match_the_code(generate):
    pages = generate.generate()
    assert sorted(p.name for p in pages) == ["cli.md", "configuration.md", "metrics.md"]
    stale = [str(p.relative_to(ROOT)) for p in generate.stale(pages)]
    assert not stale, (f"{', '.join(stale)} differ from the code: run `.venv/bin/python docs/generate.py` "
                       "and commit the result")


def test_every_setting_has_a_description(generate):
    missing = [key for key, field in generate.settings_fields() if not (field.description or "").strip()]
    assert not missing, ("settings without a description (add a docstring line under each field): "
                         + ", ".join(missing))


def test_the_references_cover_everything(generate):
    """Every setting, command and metric appears in its page (guards the generator itself)."""
    config = generate.render_configuration()
    for key, _ in generate.settings_fields():
        assert f"`{key}`" in config, key
    cli = generate.render_cli()
    for command in ("run", "produce", "search", "serve", "status", "backfill", "eval", "demo", "lake compact",
                    "lake vacuum", "lake checkpoint", "dlq show", "dlq redrive", "restore", "model export",
                    "model prune"):
        assert f"## `embedworker {command}`" in cli, command
    metrics = generate.render_metrics()
    for name in ("embedworker_records_consumed_total", "embedworker_end_to_end_latency_seconds",
                 "embedworker_replicas", "embedworker_vectors_expired_total", "embedworker_serve_requests_total",
                 "embedworker_serve_replicas"):
        assert f"`{name}`" in metrics, name


def test_every_reason_code_is_documented():
    from workers.documents import REASON_CODES

    contract = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
    missing = [code for code in REASON_CODES if f"`{code}`" not in contract]
    assert not missing, f"reason codes missing from docs/contract.md: {', '.join(missing)}"


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; the details belong in docs/"


def test_every_cli_argument_says_what_it_does():
    """The generated CLI reference shows each argument's help: one without any shows only its default."""
    import argparse

    from pipelines.cli.main import build_parser

    silent = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not action.help and action.dest != "help":
                silent.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), [])
    assert not silent, f"arguments without help: {silent}"
