"""Secrets: every secret read (from a value or a `*_file` key) is registered with the log filter,
so a later log line shows '***' instead; `kafka.security.ssl_password_file` reaches kafka-python
as `ssl_password`; a secret file that cannot serve is a configuration error naming its key."""

import io
import logging
import uuid

import pytest
from pydantic import SecretStr

from pipelines.config import ConfigError, load_settings
from workers import logs
from workers.secrets import SecretFileError, read_secret
from workers.settings import KafkaSecurity, RedisSettings


@pytest.fixture
def log_stream(monkeypatch):
    """The text the real 'embedworker' handler (with its SecretFilter) writes."""
    monkeypatch.setenv("EMBEDWORKER_LOG_LEVEL", "INFO")  # configure() writes them; restored after
    monkeypatch.setenv("EMBEDWORKER_LOG_JSON", "0")
    logs.configure("INFO", json_format=False)
    handler = logging.getLogger("embedworker").handlers[0]
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield stream
    handler.setStream(previous)


def secret_file(tmp_path, name="secret"):
    value = f"s3cret-{uuid.uuid4().hex}"  # never registered before this test
    path = tmp_path / name
    path.write_text(value + "\nsecond line is ignored\n")
    return value, path


def read_kafka_sasl(path):
    sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="u", sasl_password_file=path)
    return sec.client_options()["sasl_plain_password"]


def read_kafka_ssl(path):
    return KafkaSecurity(protocol="SSL", ssl_password_file=path).client_options()["ssl_password"]


def read_redis(path):
    settings = RedisSettings(password_file=path)
    return read_secret(settings.password, settings.password_file)  # as workers.sinks.redis_client.connect


@pytest.mark.parametrize("read", [read_kafka_sasl, read_kafka_ssl, read_redis])
def test_a_secret_read_from_a_file_is_redacted_in_later_log_lines(tmp_path, log_stream, read):
    value, path = secret_file(tmp_path)
    log = logging.getLogger("embedworker.test")
    log.warning("before: %s", value)
    assert read(path) == value
    log.warning("after: %s", value)
    lines = log_stream.getvalue().splitlines()
    assert value in lines[0]  # not registered until read: the filter masks registered values only
    assert value not in lines[1] and "after: ***" in lines[1]


def test_the_ssl_password_is_redacted_once_the_client_options_are_built(log_stream):
    value = f"keypass-{uuid.uuid4().hex}"
    options = KafkaSecurity(protocol="SSL", ssl_keyfile="k.pem", ssl_password=SecretStr(value)).client_options()
    assert options["ssl_password"] == value and options["ssl_keyfile"] == "k.pem"
    logging.getLogger("embedworker.test").error("kafka said %s", options)
    assert value not in log_stream.getvalue() and "***" in log_stream.getvalue()


def test_ssl_password_file_reaches_the_client_options(tmp_path, monkeypatch):
    value, path = secret_file(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(f"kafka:\n  security:\n    protocol: SSL\n    ssl_password_file: '{path}'\n")
    settings = load_settings(config, environ={})
    assert settings.kafka.security.client_options()["ssl_password"] == value
    assert value not in str(settings.redacted())
    # PLAINTEXT uses no SSL options: the key is then not read
    assert "ssl_password" not in KafkaSecurity(ssl_password_file=path).client_options()


@pytest.mark.parametrize("key, yaml_value, expected", [
    ("kafka.security.ssl_password_file", "{ssl_password: abcd, ssl_password_file: FILE}",
     "set ssl_password or ssl_password_file, not both"),
    ("kafka.security.ssl_password_file", "{ssl_password_file: MISSING}", "cannot read"),
    ("kafka.security.sasl_password_file", "{sasl_password_file: EMPTY}", "is empty"),
])
def test_a_kafka_secret_file_that_cannot_serve_is_a_config_error_naming_the_key(tmp_path, key, yaml_value, expected):
    _, path = secret_file(tmp_path)
    (tmp_path / "empty").write_text("\n")
    yaml_value = (yaml_value.replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "empty"))
                  .replace("FILE", str(path)))
    config = tmp_path / "c.yaml"
    config.write_text(f"kafka:\n  security: {yaml_value}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    line = next(line for line in str(err.value).splitlines() if line.strip().startswith(f"{key}:"))
    assert expected in line


def test_redis_password_and_password_file_together_are_a_config_error(tmp_path):
    _, path = secret_file(tmp_path)
    with pytest.raises(ConfigError, match="redis.password_file: set password or password_file, not both"):
        load_settings(None, environ={"EMBEDWORKER__REDIS__PASSWORD": "abcd",
                                     "EMBEDWORKER__REDIS__PASSWORD_FILE": str(path)})


def test_a_secret_file_gone_at_connection_time_names_the_key(tmp_path):
    _, path = secret_file(tmp_path)
    security = KafkaSecurity(protocol="SSL", ssl_password_file=path)
    path.unlink()
    with pytest.raises(SecretFileError, match=r"kafka.security.ssl_password_file: cannot read .*No such file"):
        security.client_options()


def test_a_registered_secret_is_masked_in_any_logger_whatever_handler_prints_it(tmp_path, log_stream):
    """kafka.conn (a child of the filtered 'kafka' logger) propagates to the root's handlers, which
    no logger filter sees: the records are masked when they are made."""
    value, path = secret_file(tmp_path)
    assert read_kafka_sasl(path) == value
    root_out = io.StringIO()
    root_handler = logging.StreamHandler(root_out)
    logging.getLogger().addHandler(root_handler)
    try:
        logging.getLogger("kafka.conn").warning("connecting with %s", value)
        logging.getLogger("some.library").error("failed: %r", {"password": value})
    finally:
        logging.getLogger().removeHandler(root_handler)
    printed = root_out.getvalue()
    assert "connecting with ***" in printed and "'password': '***'" in printed
    assert value not in printed


def test_kafka_pythons_tracebacks_are_dropped_unless_debugging(log_stream, monkeypatch):
    """kafka-python logs a lost connection at ERROR with its traceback: whichever handler prints
    it, the message stays and the traceback goes (the records are trimmed when they are made)."""
    def printed() -> str:
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        logging.getLogger().addHandler(handler)
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except OSError:
            logging.getLogger("kafka.net.transport").exception("Error receiving network data closing socket")
        finally:
            logging.getLogger().removeHandler(handler)
        return out.getvalue()

    assert printed() == "Error receiving network data closing socket\n"
    monkeypatch.setenv("EMBEDWORKER_LOG_LEVEL", "DEBUG")
    logs.configure("DEBUG", json_format=False)
    try:
        assert "Traceback (most recent call last)" in printed()
    finally:
        logs.configure("INFO", json_format=False)
