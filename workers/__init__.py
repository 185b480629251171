"""What runs inside a Ray actor: the document contract, the encoder, batching, the Kafka
source and the sinks. Nothing here imports `pipelines`."""
