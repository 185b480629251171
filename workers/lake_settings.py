"""Settings of the Parquet side (`parquet:`): the folder or object store, the format (a Delta
Lake table, or the older plain files), rolling, compaction and the S3 connection. Plain
validated data like `workers.settings`; the credentials are resolved only when a connection
opens (`storage_options`) and registered with the log filter then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from workers.settings import _Section, check_secret_file, read_secret


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
