"""Logging setup shared by the command line and the actors: plain text or one JSON object a line.

Secrets never reach the logs: settings hold them as SecretStr, URLs are redacted before they
are logged, and `SecretFilter` masks any registered secret value that a library might print.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Literal, get_args

# The level names accepted by `logging.level` and `--log-level` (any case; stored upper case).
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LEVELS: tuple[str, ...] = get_args(LogLevel)

_SECRETS: set[str] = set()
# kafka-python logs every lost connection at ERROR with its traceback (seen by the nemesis during
# each Kafka fault), which the worker reports in its own words: its records lose the traceback,
# unless the level is DEBUG.
ONE_LINE_LIBRARIES = frozenset({"kafka"})
_LIBRARY_TRACEBACKS = False


def register_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line (at least 4 characters)."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def _mask(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a library's bad format arguments: logging reports those itself
        return
    if any(s in message for s in _SECRETS):
        for s in _SECRETS:
            message = message.replace(s, "***")
        record.msg, record.args = message, None


class SecretFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            _mask(record)
        return True


def _masking_record_factory(base):
    """Wrap logging's record factory so every record of every logger (kafka.conn, redis, ray …)
    is masked when it is made, whichever handler prints it later: a logger's own filter does not
    see what its children propagate."""
    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if _SECRETS:
            _mask(record)
        if not _LIBRARY_TRACEBACKS and record.name.partition(".")[0] in ONE_LINE_LIBRARIES:
            record.exc_info, record.stack_info = None, None
        return record

    factory.masks_secrets = True  # type: ignore[attr-defined]
    return factory


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in getattr(record, "fields", {}).items():
            entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str | None = None, json_format: bool | None = None) -> None:
    """Configure the 'embedworker' loggers once per process (level and format also from the
    environment: EMBEDWORKER_LOG_LEVEL, EMBEDWORKER_LOG_JSON=1, which actors inherit)."""
    level = (level or os.environ.get("EMBEDWORKER_LOG_LEVEL") or "INFO").upper()
    unknown = level not in LEVELS
    if unknown:  # the settings validate logging.level; this is a hand-set environment variable
        level = "INFO"
    global _LIBRARY_TRACEBACKS
    _LIBRARY_TRACEBACKS = level == "DEBUG"
    if not getattr(logging.getLogRecordFactory(), "masks_secrets", False):
        logging.setLogRecordFactory(_masking_record_factory(logging.getLogRecordFactory()))
    if json_format is None:
        json_format = os.environ.get("EMBEDWORKER_LOG_JSON", "0") in ("1", "true", "True")
    os.environ["EMBEDWORKER_LOG_LEVEL"], os.environ["EMBEDWORKER_LOG_JSON"] = level, "1" if json_format else "0"
    logger = logging.getLogger("embedworker")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(SecretFilter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    for noisy in ("kafka", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if unknown:
        logger.warning("EMBEDWORKER_LOG_LEVEL is not one of %s: logging at INFO", ", ".join(LEVELS))
