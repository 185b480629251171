"""What wires and drives the workers, grouped by job. Imports `workers`, never the reverse.

The ground floor, which every package may use: `config` (the YAML/environment configuration
and which model to use) and `ray_session` (the driver's Ray session, replica names).

Packages, each importing only those listed below it (enforced by `make lint`):
- `cli/`: the command line — the entry point, its lake and dead-letter commands, tables, the demo.
- `evaluation/`: retrieval quality (eval sets, metrics, the eval run).
- `ops/`: reports and operator tools — status, the dead-letter tools, produce.
- `batch/`: backfills of files, bounded replays of a topic, the lake as input.
- `stream/`: the streaming driver — the supervisor, elastic replicas, the autoscaler, replica status.
- `serving/`: the query service (Ray Serve) and search.
- `maintenance/`: the lake's upkeep, retention sweeps, restore.
Runtime code (stream, batch, serving, maintenance) never imports reports (`ops`) or the CLI.
"""

import os as _os

# A clean stop of a driver (run, serve: SIGTERM or Ctrl-C drains, then one line "stopped") must
# not be preceded by the stack Ray's native failure handler prints for the signal ("*** SIGTERM
# received … PC: @ …"). Ray reads this variable when it is imported, which in a driver happens
# after this package is; `ray_session.init_ray` takes it out of the environment again before Ray
# starts its processes, so a Ray worker that crashes still prints its native stack.
QUIET_NATIVE_SIGTERM = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER" not in _os.environ
if QUIET_NATIVE_SIGTERM:
    _os.environ["RAY_DISABLE_FAILURE_SIGNAL_HANDLER"] = "1"
