"""Backfill work units (slices of input files) and the actor that embeds them. May import the
ground floor, `encoding` and `sinks`; never the stream or Kafka."""
