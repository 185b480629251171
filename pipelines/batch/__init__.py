"""Bounded work: backfills of files through Ray Data and replays of a topic (`backfill`), the
lake as backfill input (`lake_input`). May import `stream`, `maintenance` and the ground floor."""
