"""Typed failures. Bad records are values (see `workers.documents.Rejection`); these are
for things that stop an operation: a model that cannot be loaded, a sink that cannot write."""


class EmbedworkerError(Exception):
    """Base class of every failure this project raises on purpose."""


class ModelNotFoundError(EmbedworkerError):
    """The model could not be found: not a local directory, not in the cache, not downloadable.
    The message names the model id and each place that was tried."""


class UnsupportedModelError(EmbedworkerError):
    """The model directory exists but its layout is one this encoder does not handle."""


class EncoderConfigError(EmbedworkerError):
    """An encoder option is invalid for this model or device (e.g. int8 on CUDA)."""


class SinkError(EmbedworkerError):
    """A sink failed in a way that retrying will not fix (bad credentials, wrong dimension)."""


class IndexLayoutError(SinkError, ValueError):
    """An index's meta hash names a key layout this version does not know (written by a newer
    one): its keys cannot be named, so nothing reads or writes it."""


class IndexMismatchError(SinkError):
    """The index named (by `redis.index` or `--target`) was built by another model, prefix,
    quantization, dimension or shard count: writing into it would mix vectors that cannot be
    compared. A configuration problem: the command exits 2 naming both sides."""


class LakeFormatError(SinkError):
    """The Parquet path holds something this version must not write to: a folder of plain
    Parquet files (`format: files`, or `embedworker lake import`), or a table of a newer
    embedworker. A configuration problem: the command exits 2."""


class SinkBackpressureError(EmbedworkerError):
    """A sink cannot take more data right now (service down, disk full, folder unwritable).
    Nothing handed to it since its last durable point is lost; the caller keeps the records,
    pauses its input and retries later."""

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceError(EmbedworkerError):
    """The record source (Kafka) failed in a way that stops the worker: authentication,
    authorization, an unknown topic."""


class ReplicaError(Exception):
    """The replica failed and is restarted, not the stream: one of its threads died of an
    unexpected exception, a rebalance was half applied. Deliberately not an EmbedworkerError
    (those stop the stream: configuration, credentials, a sink that will never work). The
    message is one sentence naming the thread and the cause."""


class ThreadStuckError(ReplicaError):
    """A thread of a failed replica did not stop when asked (a forward pass that never returns,
    a write that hangs past every timeout): the replica cannot be set up again in this process
    without holding two models, so its process is restarted."""
