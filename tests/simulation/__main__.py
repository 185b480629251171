"""Replay one schedule of the simulation with its trace:

    .venv/bin/python -m tests.simulation --seed 1234 [-v]
"""

import argparse

from tests.simulation.sim import SimFailure, run_seed

parser = argparse.ArgumentParser(description="replay one seed of the worker core's simulation")
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("-v", "--verbose", action="store_true", help="print the trace as it runs")
args = parser.parse_args()
try:
    sim = run_seed(args.seed, verbose=args.verbose)
except SimFailure as exc:
    print(exc)
    raise SystemExit(1) from None
print(f"seed {args.seed}: ok ({len(sim.produced)} records, {len(sim.kafka.commits)} commits, "
      f"{sim.clock.now:.1f} simulated s)")
