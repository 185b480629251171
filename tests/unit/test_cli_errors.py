"""A failed service is one line in words and exit 1 (status: 3); --debug adds the traceback."""

import logging
import socket

import pytest
import redis
from kafka.errors import KafkaConnectionError

from pipelines.cli import main as cli
from pipelines.cli.main import failure_sentence, main
from pipelines.config import load_settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp_path, model_dir="."):
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name: '{model_dir}'}}\n"
                    f"kafka: {{bootstrap_servers: '127.0.0.1:{closed_port()}', request_timeout_ms: 1500}}\n"
                    f"redis: {{url: 'redis://:hunter2@127.0.0.1:{closed_port()}/0', socket_timeout_s: 1, retries: 0}}\n"
                    f"parquet: {{path: '{tmp_path / 'pq'}'}}\n")
    (tmp_path / "docs.jsonl").write_text('{"id": "a", "text": "hello"}\n')
    return str(path)


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path, capsys):
    cfg = config(tmp_path)
    assert main(["produce", str(tmp_path / "docs.jsonl"), "-c", cfg]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Kafka") and "check kafka.bootstrap_servers" in err and "Traceback" not in err
    assert main(["produce", str(tmp_path / "docs.jsonl"), "-c", cfg, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_status_with_every_service_down_exits_3_in_words(tmp_path, capsys, tiny_model_dir):
    assert main(["status", "-c", config(tmp_path, tiny_model_dir), "--window", "0", "--no-actors"]) == 3
    out = capsys.readouterr()
    assert "unhealthy: Kafka:" in out.out and "unhealthy: Redis:" in out.out
    assert "Traceback" not in out.out + out.err and "hunter2" not in out.out + out.err


def test_raw_service_errors_name_the_service_and_never_the_password(tmp_path):
    settings = load_settings(config(tmp_path))
    sentence = failure_sentence(redis.ConnectionError("Error 111 connecting"), settings)
    assert sentence.startswith("Redis at redis://") and "hunter2" not in sentence and "check redis.url" in sentence
    assert failure_sentence(KafkaConnectionError("gone"), settings).startswith("Kafka: KafkaConnectionError")
    assert failure_sentence(FileNotFoundError(2, "No such file", "x.yaml"), None).startswith("FileNotFoundError")


def fail_with_oserror(args):
    raise OSError("disk gone")


@pytest.mark.parametrize("argv", [["--log-level", "debug", "status", "-c", "CFG"],
                                  ["status", "-c", "CFG", "--log-level", "DEBUG"]])
def test_log_level_is_taken_before_and_after_the_command(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.setenv("EMBEDWORKER_LOG_LEVEL", "INFO")  # logs.configure() writes it; restored after
    monkeypatch.setattr(cli, "cmd_status", fail_with_oserror)
    path = tmp_path / "c.yaml"
    path.write_text("logging: {level: WARNING}\n")
    assert main([str(path) if a == "CFG" else a for a in argv]) == 3
    assert logging.getLogger("embedworker").level == logging.DEBUG  # the flag wins over logging.level
    assert "Traceback" in capsys.readouterr().err  # log level DEBUG prints the traceback


@pytest.mark.parametrize("argv", [["--log-level", "verbose", "status", "-c", "x.yaml"],
                                  ["status", "-c", "x.yaml", "--log-level", "verbose"]])
def test_a_bad_log_level_flag_exits_2_naming_the_flag(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "argument --log-level: invalid choice: 'VERBOSE'" in capsys.readouterr().err
