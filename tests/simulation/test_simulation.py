"""The worker core under 2,000 seeded schedules (tests/simulation/sim.py): each is run and checked
in simulated time, on both cores. A failure names the seed and the command that replays it.
EMBEDWORKER_SIM_SEEDS and EMBEDWORKER_SIM_FIRST choose other seeds (a longer hunt)."""

import os
from concurrent.futures import ProcessPoolExecutor

from tests.simulation.sim import SimFailure, run_seed

SEEDS = int(os.environ.get("EMBEDWORKER_SIM_SEEDS", "2000"))
FIRST = int(os.environ.get("EMBEDWORKER_SIM_FIRST", "0"))


def run_seeds(seeds: range) -> list[str]:
    failures = []
    for seed in seeds:
        try:
            run_seed(seed)
        except SimFailure as exc:
            failures.append(str(exc))
    return failures


def test_every_seeded_schedule_keeps_the_invariants(record_property):
    workers = max(1, min(2, os.cpu_count() or 1))
    step = -(-SEEDS // (workers * 8))
    chunks = [range(start, min(start + step, FIRST + SEEDS)) for start in range(FIRST, FIRST + SEEDS, step)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        failures = [f for found in pool.map(run_seeds, chunks) for f in found]
    record_property("schedules", SEEDS)  # the run's last line says how many (tests/conftest.py)
    assert not failures, f"{len(failures)} of {SEEDS} schedules broke an invariant:\n\n" + "\n\n".join(failures[:5])
