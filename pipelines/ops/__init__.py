"""Reports and operator tools: `status` (lag, vectors, lake, replicas, health), `dlq` (the
dead-letter topic shown and re-driven), `produce` (a JSONL file into the topic). May import
`batch`, `stream`, `serving`, `maintenance` and the ground floor; nothing runtime imports it."""
