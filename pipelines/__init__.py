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
