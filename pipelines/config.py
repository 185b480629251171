"""Configuration: a YAML file, every key overridable by environment variables.

    EMBEDWORKER__KAFKA__TOPIC=news.docs            # section and key joined by '__'
    EMBEDWORKER__REDIS__PASSWORD=...               # secrets: environment or *_file keys only

Precedence: environment > YAML file > defaults. Validated at start; a bad value raises
ConfigError naming the key (`kafka.max_poll_records: Input should be greater than 0`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from workers.errors import EmbedworkerError
from workers.settings import (BatchingSettings, DocumentSettings, KafkaSettings, ModelSettings, ParquetSettings,
                              RedisSettings, WorkersSettings, redact_url)

ENV_PREFIX = "EMBEDWORKER__"


class ConfigError(EmbedworkerError):
    """The configuration is invalid; the message names each bad key."""


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: str | None = None      # None: a local Ray; "auto" or ray://host:10001 for a cluster
    namespace: str = "embedworker"
    num_cpus: int | None = None     # for a local Ray only


class LoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    level: str = "INFO"
    json_format: bool = False
    summary_interval_s: float = 10.0


class EmbedworkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      case_sensitive=False, frozen=True)

    kafka: KafkaSettings = KafkaSettings()
    model: ModelSettings = ModelSettings()
    batching: BatchingSettings = BatchingSettings()
    documents: DocumentSettings = DocumentSettings()
    redis: RedisSettings = RedisSettings()
    parquet: ParquetSettings = ParquetSettings()
    workers: WorkersSettings = WorkersSettings()
    ray: RaySettings = RaySettings()
    logging: LoggingSettings = LoggingSettings()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry the YAML file's content; the environment wins over it.
        return env_settings, init_settings

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


def load_settings(path: str | os.PathLike | None = None, overrides: dict | None = None) -> EmbedworkerSettings:
    """Read the YAML file (if any), apply `overrides` (nested dict) and the environment, validate.
    Raises ConfigError naming every bad key."""
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
    for section, values in (overrides or {}).items():
        data.setdefault(section, {})
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    try:
        return EmbedworkerSettings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None


def _explain(exc: ValidationError, path) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where} ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        if isinstance(value, str) and "://" in value:
            value = redact_url(value)
        shown = "" if isinstance(value, (dict, list, SecretStr)) or "password" in key else f" (got {value!r})"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {key}: {message}{shown}; environment: {ENV_PREFIX}{key.upper().replace('.', '__')}")
    return "\n".join(lines)
