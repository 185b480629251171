"""Secrets: read from a setting's value or its `*_file` (first line) only when a connection
opens, registered with the log filter (`workers.logs`) so no log line shows them, and URLs
redacted before they are shown."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr, ValidationInfo
from pydantic_core import PydanticCustomError

from workers import logs
from workers.errors import EmbedworkerError


class SecretFileError(EmbedworkerError):
    """A `*_file` secret could not be read when a connection opened (gone, unreadable, empty)."""


def read_secret(value: SecretStr | None, file: Path | None, key: str = "secret file") -> str | None:
    """The secret's text, from the value or from the file (first line, stripped), registered
    with the log filter. SecretFileError naming `key` when the file cannot serve."""
    if value is not None:
        secret = value.get_secret_value()
    elif file is not None:
        secret, problem = _first_line(file)
        if problem is not None:
            raise SecretFileError(f"{key}: {problem}")
    else:
        return None
    logs.register_secret(secret)
    return secret


def _first_line(file: Path) -> tuple[str, str | None]:
    """(the file's first line stripped, None), or ("", why it cannot hold a secret)."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return "", f"cannot read {file} ({getattr(exc, 'strerror', None) or exc})"
    secret = lines[0].strip() if lines else ""
    return secret, None if secret else f"{file} is empty (the secret is its first line)"


def check_secret_file(file: Path | None, info: ValidationInfo, value_key: str) -> Path | None:
    """For the validators of `*_file` keys: not together with `value_key`, and readable."""
    if file is None:
        return None
    if info.data.get(value_key) is not None:
        raise PydanticCustomError("secret_twice", "set {value_key} or {file_key}, not both",
                                  {"value_key": value_key, "file_key": info.field_name})
    _, problem = _first_line(file)
    if problem is not None:
        raise PydanticCustomError("secret_file", "{problem}", {"problem": problem})
    return file


def redact_url(url: str) -> str:
    """The URL with any password replaced by '***' (for logs and status output)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
