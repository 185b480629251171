"""Configuration: a YAML file, every key overridable by environment variables.

    EMBEDWORKER__KAFKA__TOPIC=news.docs            # section and key joined by '__'
    EMBEDWORKER__REDIS__PASSWORD=...               # secrets: environment or *_file keys only

Precedence: environment > YAML file > defaults. Validated at start; a bad value raises
ConfigError naming the key (`kafka.max_poll_records: Input should be greater than 0`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from workers.encoding.model_files import read_model_files
from workers.errors import EmbedworkerError, ModelNotFoundError
from workers.logs import LogLevel
from workers.settings import (
    BatchingSettings,
    DocumentSettings,
    KafkaSettings,
    ModelSettings,
    ParquetSettings,
    RedisSettings,
    WorkersSettings,
    redact_url,
)

ENV_PREFIX = "EMBEDWORKER__"


class ConfigError(EmbedworkerError):
    """The configuration is invalid; the message names each bad key."""


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    address: str | None = None
    """Null: a local Ray, started and stopped with the command; `auto` or `ray://host:10001` for a cluster."""
    namespace: str = "embedworker"
    """The Ray namespace of the actors."""
    num_cpus: int | None = None
    """CPUs of a local Ray (only without `address`)."""
    auth_mode: Literal["token", "disabled"] | None = None
    """How `embedworker` commands authenticate to the cluster at `address` (`RAY_AUTH_MODE`, set before Ray loads):
    `token` sends the token of `RAY_AUTH_TOKEN` or `~/.ray/auth_token`; null leaves Ray's default. In your own
    Python, set `RAY_AUTH_MODE` yourself."""


class ServeSettings(BaseModel):
    """`embedworker serve`: the query service (Ray Serve replicas, each with the model loaded)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    host: str = "127.0.0.1"
    """Address to listen on (`--host` overrides); `0.0.0.0` for every interface."""
    port: int = Field(8000, ge=1, le=65535)
    """Port to listen on (`--port` overrides)."""
    replicas: int = Field(1, ge=1)
    """Replicas at start (the minimum when autoscaling), each with its own copy of the model."""
    max_replicas: int | None = Field(None, ge=1)
    """Above `replicas`: Ray Serve autoscales between the two."""
    target_ongoing_requests: float = Field(8.0, gt=0)
    """Requests in flight per replica that autoscaling aims at."""
    max_ongoing_requests: int = Field(256, ge=1)
    """Requests in flight per replica at most; more wait in the proxy."""
    ingress: Literal["haproxy", "proxy"] = "haproxy"
    """How requests reach the replicas (for the local Ray `serve` starts; on a cluster, its nodes' environment
    decides): `haproxy`, Ray Serve's HAProxy ingress, which passes each request straight to a replica's own HTTP
    port (30000–31000, every interface of its node); `proxy`, Serve's Python HTTP proxy (a third of the throughput
    at 32 clients on 2 cores)."""
    max_batch_size: int = Field(64, ge=1)
    """Requests embedded together in one encoder call (all their inputs): with the model idle a request goes at
    once; the requests that arrive while a batch runs go together in the next."""
    batch_wait_ms: float = Field(0.0, ge=0)
    """How long a batch smaller than `max_batch_size` waits for more requests before it starts (0: never; batches
    fill with the load anyway)."""
    num_gpus: float = Field(0, ge=0)
    """GPUs per replica: 1, or a fraction to share a GPU with stream replicas."""
    num_cpus: float = Field(2, ge=0)
    """CPUs Ray reserves per replica; on a CPU it is also the replica's torch threads (Ray sets OMP_NUM_THREADS
    from it). With a GPU, 1 is enough."""
    api_key: SecretStr | None = None
    """Clients send `Authorization: Bearer <key>` (every route but `/healthz`, `/metrics` and the page); null: no
    key."""
    api_key_file: Path | None = None
    """A file whose first line is the API key (instead of `api_key`)."""
    max_inputs: int = Field(2048, ge=1)
    """Texts per embeddings request at most."""
    max_input_chars: int = Field(32_768, ge=1)
    """Characters per text at most (a longer one is a 400, before tokenizing)."""
    max_k: int = Field(1000, ge=1)
    """Hits per search at most."""
    max_filter_chars: int = Field(2000, ge=1)
    """Characters of a search filter at most."""

    @model_validator(mode="after")
    def _replicas_in_order(self) -> ServeSettings:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(f"serve.max_replicas ({self.max_replicas}) must be at least serve.replicas ({self.replicas})")
        if self.api_key is not None and self.api_key_file is not None:
            raise ValueError("set serve.api_key or serve.api_key_file, not both")
        return self


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    mode: Literal["auto", "dense", "lexical", "hybrid"] = "auto"
    """How `search` and `/search` rank: `dense` (the vector set), `lexical` (BM25 over the lake's
    text, Korean by morphemes), `hybrid` (both, fused by reciprocal rank); `auto` is hybrid where
    a lexical index can be built (`search.lexical` and a Delta lake with text), else dense."""
    lexical: bool = True
    """Build and follow the lexical index from the lake (needs `parquet.format: delta` and
    `parquet.include_text`)."""
    rrf_k: int = Field(60, ge=1)
    """Reciprocal-rank fusion's k: a hit at rank r adds weight / (k + r)."""
    dense_weight: float = Field(1.0, ge=0)
    """Weight of the vector ranking in the fusion."""
    lexical_weight: float = Field(1.0, ge=0)
    """Weight of the BM25 ranking in the fusion."""
    candidates: int = Field(50, ge=1)
    """Hits taken from each side before fusing (at least k)."""
    refresh_s: float = Field(5.0, gt=0)
    """How often the query service reads the lake's new versions into its lexical indexes."""
    snapshot_every_s: float = Field(600.0, gt=0)
    """How often at most a process that refreshed saves the lexical index beside the lake."""
    reranker: str | None = None
    """A cross-encoder (a local directory or a hub id, e.g. `dragonkue/bge-reranker-v2-m3-ko`) that
    reorders the first `rerank_top` hits; none by default."""
    rerank_top: int = Field(20, ge=1)
    """How many of the best hits the reranker reads."""
    rerank_max_chars: int = Field(1000, ge=1)
    """Characters of each document (title and text) kept for the reranker, in memory and in the snapshot."""

    @model_validator(mode="after")
    def _some_weight(self) -> SearchSettings:
        if self.dense_weight == 0 and self.lexical_weight == 0:
            raise ValueError("search.dense_weight and search.lexical_weight cannot both be 0")
        return self


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    level: LogLevel = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL, in any case (`--log-level` overrides)."""
    json_format: bool = False
    """One JSON object per log line instead of text."""
    summary_interval_s: float = 10.0
    """How often the driver logs one summary line per replica."""

    @field_validator("level", mode="before")
    @classmethod
    def _upper_case(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class EmbedworkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      case_sensitive=False, frozen=True, use_attribute_docstrings=True)

    kafka: KafkaSettings = KafkaSettings()
    """Where documents come from: brokers, topic, consumer group, dead letters, security."""
    model: ModelSettings = ModelSettings()
    """The embedding model: which one, where it runs, prefixes, truncation, chunking, tokenizing."""
    batching: BatchingSettings = BatchingSettings()
    """The token-budget dynamic batcher in front of the forward pass."""
    documents: DocumentSettings = DocumentSettings()
    """Limits of the message contract; a record over one goes to the dead-letter topic."""
    redis: RedisSettings = RedisSettings()
    """The Redis vector-set sink, search and retention."""
    parquet: ParquetSettings = ParquetSettings()
    """The lake: a Delta Lake table (or the older plain files) of every vector and document."""
    workers: WorkersSettings = WorkersSettings()
    """The streaming replicas: how many, their resources, backpressure, metrics, autoscaling."""
    ray: RaySettings = RaySettings()
    """Which Ray the commands use: a local one or a cluster."""
    serve: ServeSettings = ServeSettings()
    """`embedworker serve`: the query service on Ray Serve."""
    search: SearchSettings = SearchSettings()
    """How searches rank: dense, lexical (BM25 from the lake) or hybrid, and the fusion."""
    logging: LoggingSettings = LoggingSettings()
    """Log level and format, and the driver's summary lines."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the YAML file's content with the environment already merged in by
        # load_settings (which reads EMBEDWORKER__* itself, so every error can name its origin).
        return (init_settings,)

    def worker_kwargs(self) -> dict:
        """The EmbeddingWorker constructor arguments (plain, picklable section models)."""
        return dict(kafka=self.kafka, model=self.model, batching=self.batching, documents=self.documents,
                    redis=self.redis, parquet=self.parquet, workers=self.workers)

    def redacted(self) -> dict:
        """The whole configuration with secrets masked (for logs and `status --json`)."""
        data = self.model_dump(mode="json")
        data["redis"]["url"] = redact_url(self.redis.url)
        data["redis"]["shard_urls"] = [redact_url(u) for u in self.redis.shard_urls]
        return data


def load_settings(path: str | os.PathLike | None = None, overrides: dict | None = None,
                  environ: dict[str, str] | None = None) -> EmbedworkerSettings:
    """Read the YAML file (if any), apply `overrides` (nested dict) and the EMBEDWORKER__*
    variables of `environ` (default: the process environment), validate. Raises ConfigError
    naming every bad key and where its value came from (the file or the variable)."""
    data: dict = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {file} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file} must hold a mapping of sections (kafka:, model:, ...)")
        for section, values in data.items():
            if section in EmbedworkerSettings.model_fields and not isinstance(values, dict) and values is not None:
                raise ConfigError(f"invalid configuration in {file}:\n  {section}: a section (a mapping of keys) "
                                  f"is expected, got {type(values).__name__} {values!r}")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {})
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    origins: dict[tuple[str, ...], str] = {}
    _merge_environment(data, os.environ if environ is None else environ, origins)
    try:
        return EmbedworkerSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path, origins)) from None


def _merge_environment(data: dict, environ, origins: dict) -> None:
    """Put every EMBEDWORKER__SECTION__KEY[__SUBKEY] variable into `data`; lists and sections
    given whole take JSON. Unknown variables are errors (a typo must not be ignored)."""
    problems = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__"))
        value: object = environ[name]
        model, where = EmbedworkerSettings, []
        for depth, part in enumerate(path):
            fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
            if part not in fields:
                known = ", ".join(sorted(fields)) or "none (it is a single value)"
                problems.append(f"  {name}: unknown setting {'.'.join(path[:depth + 1])!r} (keys here: {known})")
                break
            model, where = _field_model(fields[part].annotation), where + [part]
        else:
            if len(path) < 2 and not (isinstance(model, type) and issubclass(model, BaseModel)):
                problems.append(f"  {name}: name a key, e.g. {ENV_PREFIX}KAFKA__TOPIC")
                continue
            if _takes_json(model, fields[path[-1]].annotation):
                try:
                    value = json.loads(str(value))
                except ValueError:
                    problems.append(f"  {name}: expects {_json_hint(model, fields[path[-1]].annotation)}; "
                                    f"got {str(value)[:60]!r}")
                    continue
            target = data
            for part in path[:-1]:
                if not isinstance(target.get(part), dict):
                    target[part] = {}
                target = target[part]
            target[path[-1]] = value
            origins[path] = name
    if problems:
        raise ConfigError("invalid configuration from the environment:\n" + "\n".join(problems))


def _field_model(annotation):
    """The pydantic model behind a field (for walking nested sections), else the annotation."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return annotation


def _takes_json(model, annotation) -> bool:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return True
    kinds = (annotation, *getattr(annotation, "__args__", ()))
    return any(getattr(k, "__origin__", k) in (list, dict, tuple) for k in kinds)


def _json_hint(model, annotation) -> str:
    if isinstance(model, type) and issubclass(model, BaseModel):
        keys = ", ".join(f'"{k}": ...' for k in list(model.model_fields)[:3])
        return f"a section as a JSON object such as {{{keys}}} (or set its keys one by one)"
    return 'a list as a JSON array such as ["redis://a:6379", "redis://b:6379"]'


def _explain(exc: ValidationError, path, origins: dict | None = None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc)
        value = err.get("input")
        if isinstance(value, str) and "://" in value:
            value = redact_url(value)
        shown = "" if isinstance(value, (dict, list, SecretStr)) or "password" in key or "api_key" in key else f" (got {value!r})"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        source = next((origins[loc[:n]] for n in range(len(loc), 0, -1) if origins and loc[:n] in origins), None)
        origin = f"from the variable {source}" if source else (
            f"{where.strip()}; or set {ENV_PREFIX}{key.upper().replace('.', '__')}" if where else
            f"environment: {ENV_PREFIX}{key.upper().replace('.', '__')}")
        lines.append(f"  {key}: {message}{shown}; {origin}")
    return "\n".join(lines)


def resolve_model(settings: EmbedworkerSettings) -> tuple[EmbedworkerSettings, str | None]:
    """Check the model can be found here; fall back to `model.fallback` if it cannot.
    Returns the settings to use and a sentence to show the user when a fallback was taken."""
    m = settings.model
    try:
        read_model_files(m.name, m.revision)
        return settings, None
    except ModelNotFoundError as exc:
        if not m.fallback:
            raise
        read_model_files(m.fallback)
        model = m.model_copy(update={"name": m.fallback, "revision": None,
                                     "document_prefix": m.fallback_document_prefix,
                                     "query_prefix": m.fallback_query_prefix})
        note = (f"model {m.name!r} is not available here ({str(exc).split('; tried:')[0]}); using the offline "
                f"fallback {m.fallback!r} instead")
        return settings.model_copy(update={"model": model}), note
