"""A file backfill moves the search alias only when every unit of its input is done (written and
rejected records cover the input): a unit without its done marker keeps the alias where it was."""

import json

import pytest

from pipelines.batch.backfill import BackfillError, BackfillJob
from pipelines.config import load_settings
from workers.batch.units import write_json_atomic


def job(tmp_path) -> BackfillJob:
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        lines = [json.dumps({"id": f"d{k}-{i}", "text": "word " * 50}) for i in range(40)]
        (folder / f"part-{k}.jsonl").write_text("\n".join(lines) + "\n")
    settings = load_settings(None, {"redis": {"enabled": False}, "parquet": {"path": str(tmp_path / "lake")}})
    return BackfillJob(settings, str(folder / "*.jsonl"), target="v2", unit_mb=0.001)


def mark_done(job: BackfillJob, unit, records: int = 40, rejected: int = 0) -> None:
    write_json_atomic(f"{job.state_dir}/units/{unit.key}.json",
                      {"unit": {"key": unit.key}, "records": records, "embedded": records - rejected, "deleted": 0,
                       "rejected": rejected})


def test_the_alias_waits_for_every_unit(tmp_path):
    backfill = job(tmp_path)
    units, pending, _ = backfill.plan()
    assert len(units) >= 3 and pending == units
    for unit in units[:-1]:
        mark_done(backfill, unit)
    with pytest.raises(BackfillError, match=f"1 of {len(units)} units unfinished.*alias was not moved"):
        backfill.check_complete(units)
    mark_done(backfill, units[-1], rejected=5)
    backfill.check_complete(units)  # every unit done, rejects included: the alias may move
