"""Settings of each part, as plain validated data (pydantic models, picklable; the only I/O:
validation checks that each `*_file` secret is readable).

`pipelines.config` composes them into the file/environment-loaded configuration; the worker
receives them as constructor arguments. Secrets are `SecretStr` (never printed) and may come
from files (`*_file`), read only when a connection opens; every secret read is registered with
the log filter (`workers.logs`), so no log line shows it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from workers.secrets import check_secret_file, read_secret, redact_url

INDEX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaSecurity(_Section):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None      # of ssl_keyfile
    ssl_password_file: Path | None = None
    ssl_check_hostname: bool = True

    @field_validator("sasl_password_file", "ssl_password_file")
    @classmethod
    def _secret_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return check_secret_file(v, info, str(info.field_name).removesuffix("_file"))

    @model_validator(mode="after")
    def _sasl_complete(self):
        if self.protocol.startswith("SASL"):
            if not self.sasl_mechanism:
                raise ValueError("sasl_mechanism is required when protocol is SASL_PLAINTEXT or SASL_SSL")
            if not self.sasl_username or (self.sasl_password is None and self.sasl_password_file is None):
                raise ValueError("sasl_username and sasl_password (or sasl_password_file) are required for SASL")
        return self

    def client_options(self) -> dict:
        """kafka-python keyword arguments (secrets resolved here, at connection time)."""
        opts: dict = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            opts.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                        sasl_plain_password=read_secret(self.sasl_password, self.sasl_password_file,
                                                        "kafka.security.sasl_password_file"))
        if self.protocol.endswith("SSL"):
            opts.update(ssl_check_hostname=self.ssl_check_hostname)
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name) is not None:
                    opts[name] = str(getattr(self, name))
            ssl_password = read_secret(self.ssl_password, self.ssl_password_file, "kafka.security.ssl_password_file")
            if ssl_password is not None:
                opts["ssl_password"] = ssl_password
        return opts


class KafkaSettings(_Section):
    bootstrap_servers: str = "localhost:9092"
    topic: str = "news.docs"
    group_id: str = "embedworker"
    dlq_topic: str | None = None
    start: Literal["committed", "earliest", "latest"] = "committed"
    security: KafkaSecurity = KafkaSecurity()
    client_id: str = "embedworker"
    max_poll_records: int = Field(500, gt=0)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    # With static membership, how long a killed replica's partitions wait for its restart
    # (process, imports, model) before they move to the others: keep it above a restart's time.
    session_timeout_ms: int = Field(30_000, ge=6_000)
    request_timeout_ms: int = Field(30_000, gt=0)
    commit_interval_ms: int = Field(1000, ge=0)
    metadata_max_age_ms: int = Field(30_000, ge=1000)  # how soon new partitions (and topics) are noticed
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0)
    replication_factor: int = Field(1, ge=1)          # of the topics the project creates (produce, DLQ)
    min_insync_replicas: int | None = Field(None, ge=1)  # their min.insync.replicas (None: the broker's)
    # Static membership (KIP-345): replica i joins as group.instance.id `{instance_prefix}-{i}`, so a
    # restarted replica takes its partitions back without a rebalance. Two drivers on one group
    # need different prefixes (the newer one fences the older); None: the group id.
    static_membership: bool = True
    instance_prefix: str | None = None

    def group_instance_id(self, replica: int) -> str | None:
        """The group.instance.id of replica `replica`, None without static membership."""
        return f"{self.instance_prefix or self.group_id}-{replica}" if self.static_membership else None

    @field_validator("topic", "group_id")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @property
    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"


class ChunkingSettings(_Section):
    enabled: bool = False
    overlap: int = Field(64, ge=0)
    max_chunks: int = Field(32, gt=0)


class ModelSettings(_Section):
    name: str = "exp-models/dragonkue-KoEn-E5-Tiny"
    revision: str | None = None
    device: str = "auto"
    dtype: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    document_prefix: str = "passage: "
    query_prefix: str = "query: "
    max_tokens: int = Field(512, gt=8)
    chunking: ChunkingSettings = ChunkingSettings()
    text_template: str = "{title}\n{text}"
    tokenizer_threads: int = Field(2, gt=0)
    tokenizer_processes: int = Field(0, ge=0)  # > 0: tokenize in that many processes of their own
    torch_threads: int | None = None
    # Used when `name` cannot be loaded (e.g. no hub access): the packaged offline model.
    fallback: str | None = None
    fallback_document_prefix: str = ""
    fallback_query_prefix: str = ""

    @field_validator("text_template")
    @classmethod
    def _template_fields(cls, v: str) -> str:
        if "{text}" not in v:
            raise ValueError("must contain {text}")
        try:
            v.format(title="", text="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{title}} and {{text}} may be used: {e}") from None
        return v


class BatchingSettings(_Section):
    max_batch_tokens: int = Field(16384, gt=0)
    max_batch_size: int = Field(256, gt=0)
    max_wait_ms: float = Field(20, ge=0)
    max_padding: float = Field(0.1, ge=0)


class DocumentSettings(_Section):
    max_id_bytes: int = Field(512, gt=0)
    max_text_bytes: int = Field(1024 * 1024, gt=0)
    max_field_bytes: int = Field(8192, gt=0)
    max_attrs_bytes: int = Field(16384, gt=0)
    max_attrs_keys: int = Field(64, gt=0)
    max_future_s: float = Field(86_400, ge=0)      # published_at later than ingestion + this: rejected
    min_published_year: int = Field(1900, ge=1)    # published_at before this year: rejected


DEFAULT_QUANTIZATION = "noquant"


class RedisSettings(_Section):
    enabled: bool = True
    url: str = "redis://localhost:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    shard_urls: list[str] = []   # shard i lives at shard_urls[i % len]; empty: all at `url`
    cluster: bool = False         # `url` is a Redis Cluster node
    key_prefix: str = "news"
    index: str | None = None      # the vector set name after the prefix; default: the model slug
    shards: int = Field(1, ge=1, le=1024)
    # None: an existing index keeps the quantization it was built with, a new one gets
    # DEFAULT_QUANTIZATION (bench/RESULTS.md "Choosing the index defaults" says why).
    quantization: Literal["q8", "noquant", "bin"] | None = None
    ef: int = Field(100, gt=0)          # EF of every insert (VADD)
    search_ef: int = Field(1000, gt=0)  # EF of searches that name none (VSIM)
    m: int = Field(16, ge=4)
    # VADD ... CAS: the neighbour search of an insert runs on a Redis thread, and only the link
    # step holds the main thread (see bench/RESULTS.md for when it pays).
    cas: bool = False
    socket_timeout_s: float = Field(10.0, gt=0)
    # A batch counts as written only when this many replicas hold it (WAIT after the writes);
    # 0: when the master has it (asynchronous replication can lose it in a failover).
    wait_replicas: int = Field(0, ge=0)
    wait_timeout_s: float = Field(2.0, gt=0)
    retries: int = Field(3, ge=0)             # more attempts after a transient error (see retry_policy)
    retry_backoff_s: float = Field(0.2, gt=0)  # the wait after the first failure, doubled per failure
    retry_backoff_max_s: float = Field(2.0, gt=0)
    ssl_ca_certs: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    # Vectors whose published_at (else the ingestion time) is older than this leave Redis (the
    # lake keeps them): "30d", "12h", "90m", "3600s", "2w"; None keeps everything.
    retention: str | None = None
    retention_sweep_s: float = Field(300, gt=0)  # how often the driver removes what has aged out

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        if v is not None:
            duration_s(v)
        return v

    @property
    def retention_s(self) -> float | None:
        return duration_s(self.retention) if self.retention is not None else None

    @field_validator("password_file")
    @classmethod
    def _secret_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return check_secret_file(v, info, "password")

    @field_validator("key_prefix")
    @classmethod
    def _key_prefix(cls, v):
        if not v or "{" in v or "}" in v:  # a hash tag in the prefix would put every shard in one slot
            raise ValueError(f"must be non-empty and without '{{' or '}}' (shard keys carry the hash tags), got {v!r}")
        return v

    @field_validator("index")
    @classmethod
    def _index_name(cls, v):
        if v is not None and not INDEX_NAME.fullmatch(v):
            raise ValueError(f"must be letters, digits, '.', '_' or '-' (it names a key and a folder), got {v!r}")
        return v

    def index_name(self, model_name: str) -> str:
        """The index written and searched: `index`, or the model's slug."""
        return self.index or model_slug(model_name)

    @field_validator("url", "shard_urls")
    @classmethod
    def _redis_scheme(cls, v):
        for url in [v] if isinstance(v, str) else v:
            if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
                raise ValueError(f"must be a redis://, rediss:// or unix:// URL, got {redact_url(url)!r}")
        return v


class AutoscaleSettings(_Section):
    """Replicas follow the backlog (see pipelines/stream/autoscaler.py for the formula)."""
    enabled: bool = False
    min_replicas: int = Field(1, ge=1)
    max_replicas: int = Field(4, ge=1)
    catch_up_s: float = Field(60, gt=0)           # the backlog should be gone within this
    scale_down_after_s: float = Field(120, ge=0)  # fewer replicas only after this long wanting fewer
    cooldown_s: float = Field(30, ge=0)           # between two changes
    interval_s: float = Field(5, gt=0)            # how often rates and lag are measured

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscaleSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class WorkersSettings(_Section):
    replicas: int = Field(1, ge=1)  # the fixed count when autoscale is off
    num_gpus: float = Field(1, ge=0)
    num_cpus: float = Field(1, ge=0)
    max_in_flight: int = Field(4096, gt=0)                       # documents polled, not yet written
    max_in_flight_bytes: int = Field(256 * 1024 * 1024, gt=0)    # and their record bytes
    sink_stall_s: float = Field(2.0, gt=0)  # a sink write running longer pauses the input at once
    max_restarts: int = Field(-1, ge=-1)
    drain_timeout_s: float = Field(60, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)  # prometheus_client port of replica 0 (+index)
    supervisor_metrics_port: int | None = Field(None, ge=0, le=65535)  # the driver's (replica counts)
    autoscale: AutoscaleSettings = AutoscaleSettings()


class S3Settings(_Section):
    """How to reach an S3-compatible store for an `s3://` path. Unset values fall back to the
    standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    AWS_ENDPOINT_URL), which delta-rs reads itself."""

    endpoint_url: str | None = None          # e.g. http://127.0.0.1:19000 (not AWS)
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    secret_access_key_file: Path | None = None
    allow_http: bool = False                 # plain HTTP endpoints (a local server)
    # delta-rs commits by conditional writes (If-None-Match: *), which S3 and the local server
    # (s3proxy) implement; "etag" is object_store's option for servers that need it said.
    conditional_put: Literal["etag"] | None = None

    @field_validator("secret_access_key_file")
    @classmethod
    def _secret_file(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return check_secret_file(v, info, "secret_access_key")

    def storage_options(self) -> dict[str, str]:
        """delta-rs (object_store) options; the secret is read now and masked in logs."""
        opts: dict[str, str] = {}
        if self.endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.endpoint_url
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.access_key_id:
            opts["AWS_ACCESS_KEY_ID"] = self.access_key_id
        secret = read_secret(self.secret_access_key, self.secret_access_key_file, "parquet.s3.secret_access_key_file")
        if secret is not None:
            opts["AWS_SECRET_ACCESS_KEY"] = secret
        if self.allow_http:
            opts["AWS_ALLOW_HTTP"] = "true"
        if self.conditional_put:
            opts["aws_conditional_put"] = self.conditional_put
        return opts

    def configure_fsspec(self) -> None:
        """Make fsspec's s3:// (backfill inputs and state folders) use these settings too, in this
        process (the driver, and each backfill actor when it sets up)."""
        import fsspec.config

        opts: dict = {}
        if self.endpoint_url:
            opts["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            opts["key"] = self.access_key_id
        secret = read_secret(self.secret_access_key, self.secret_access_key_file, "parquet.s3.secret_access_key_file")
        if secret is not None:
            opts["secret"] = secret
        if self.region:
            opts["client_kwargs"] = {"region_name": self.region}
        if opts:
            fsspec.config.conf["s3"] = {**fsspec.config.conf.get("s3", {}), **opts}


class ParquetSettings(_Section):
    enabled: bool = True
    path: str = "./data/vectors"
    # delta: one Delta Lake table (exactly-once by application transactions, costs flat as
    # history grows); files: the older folder of files named by offset range (plain folders only).
    format: Literal["delta", "files"] = "delta"
    max_rows_per_file: int = Field(50_000, gt=0)
    max_seconds: float = Field(60, gt=0)
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    include_text: bool = True                 # delta: keep the document text (re-embedding without Kafka)
    target_file_mb: int = Field(256, gt=0)    # `lake compact`: the size files are merged into
    compact_after_days: int | None = Field(None, ge=1)  # the driver compacts days this old by itself
    vacuum_retention_hours: int = Field(168, ge=1)      # `lake vacuum`: files removed longer ago than this
    s3: S3Settings = S3Settings()

    @model_validator(mode="after")
    def _format_fits_path(self):
        if self.format == "files" and "://" in self.path and not self.path.startswith("file://"):
            raise ValueError("format 'files' is for plain folders; object storage (s3://…) needs format 'delta'")
        return self

    def storage_options(self) -> dict[str, str] | None:
        """What delta-rs needs to open `path` (None for a local folder)."""
        return self.s3.storage_options() if self.path.startswith("s3://") else None


DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration_s(text: str) -> float:
    """Seconds in "30d", "12h", "90m", "3600s", "2w"; ValueError naming the format otherwise."""
    match = DURATION.fullmatch(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"must be a positive number and a unit (s, m, h, d or w), e.g. '30d', got {text!r}")
    return float(match.group(1)) * UNIT_S[match.group(2)]


def model_slug(name: str) -> str:
    """A short lowercase name for keys and file metadata: the last path component of the
    model id (`exp-models/dragonkue-KoEn-E5-Tiny` -> `dragonkue-koen-e5-tiny`); for a
    package or a directory called `model`, the package or parent directory name."""
    base = name[4:] if name.startswith("pkg:") else name.rstrip("/")
    parts = [p for p in base.replace("\\", "/").split("/") if p]
    last = parts[-1] if parts else "model"
    if last.lower() in ("model", "models", "snapshot") and len(parts) > 1:
        last = parts[-2]
    slug = "".join(c if c.isalnum() else "-" for c in last.lower())
    return "-".join(filter(None, slug.split("-"))) or "model"
