"""What runs inside a Ray actor (or any process): nothing here imports `pipelines`.

The ground floor, which every package below may use: `documents` (the message contract),
`settings` (every section's validated settings), `errors` (typed failures), `logs`.

Packages:
- `stream/`: the streaming replica — `worker` (the polling thread and the replica's life),
  `encode_stage`, `sink_stage`, `ledger` (every record from poll to commit), `metrics`.
- `batch/`: backfill work units and the actor that embeds them.
- `encoding/`: the encoder, tokenizing, the token-budget batcher, model files, quantization;
  it imports neither ray, kafka nor redis (it runs on a bare GPU box).
- `kafka/`: the source, the client builder, dead letters, offsets read by the admin client;
  it knows nothing of Redis or the lake.
- `sinks/`: what every sink promises, Redis vector sets, the lake; it knows nothing of Kafka.
"""
