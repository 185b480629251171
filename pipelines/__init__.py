"""What wires and drives the workers: configuration, streaming supervision, backfill,
search, evaluation and the command line."""
