"""Credentials and secrets: Redis ACL users and TLS, Kafka SASL, nothing secret in logs or output."""

import json
import logging
import subprocess
import sys

import pytest
import redis

from pipelines.ops.status import collect_status
from tests.helpers import WorkerThread, all_committed, create_topic, doc, produce, read_parquet, wait_until
from workers.errors import SinkError, SourceError
from workers.sinks.vector_sets import VectorSetIndex

pytestmark = [pytest.mark.integration, pytest.mark.reliability]
SASL_BOOTSTRAP = "localhost:9094"           # the SASL_PLAINTEXT listener of infra/local/kafka.sh
SASL_USER, SASL_PASSWORD = "embedworker", "embedworker-local-dev"
# what the sink needs (workers/sinks/redis_client.py SINK_COMMANDS), and what the test reads with
REDIS_COMMANDS = ("+evalsha +script|load +vadd +vrem +vgetattr +vcard +vdim +vsim +vismember +hget +hset +hpexpire "
                  "+hgetall +get +info +ping +hello +client")


@pytest.fixture
def acl_user(redis_client, unique):
    """A Redis ACL user allowed only the worker's commands on its own key prefix."""
    name, password, prefix = f"ew-{unique}", f"pw-{unique}-secret", f"acl{unique}"
    redis_client.execute_command("ACL", "SETUSER", name, "on", f">{password}", f"~{prefix}:*", "resetchannels",
                                 *REDIS_COMMANDS.split())
    yield name, password, prefix
    redis_client.execute_command("ACL", "DELUSER", name)


def _stream(settings, n=60):
    create_topic(settings, partitions=2)
    produce(settings, [doc(f"s{i}", f"security test document {i}") for i in range(n)])


def test_worker_runs_as_an_acl_user_limited_to_its_prefix(stream_settings, acl_user, redis_client):
    name, password, prefix = acl_user
    settings = stream_settings(redis={"username": name, "password": password, "key_prefix": prefix})
    _stream(settings)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=60, message="commit as the ACL user")
    finally:
        worker.stop()
    assert redis_client.execute_command("VCARD", f"{prefix}:tiny-bert") == 60
    limited = redis.Redis.from_url(settings.redis.url, username=name, password=password)
    with pytest.raises(redis.exceptions.NoPermissionError):
        limited.set("outside-the-prefix", "x")


def test_wrong_redis_password_and_missing_permission_fail_fast_naming_the_problem(
        stream_settings, acl_user, redis_client):
    name, password, prefix = acl_user
    wrong = stream_settings(redis={"username": name, "password": "not-the-password", "key_prefix": prefix})
    with pytest.raises(SinkError, match=f"rejected the credentials of user '{name}'"):
        WorkerThread(wrong).worker.setup()

    redis_client.execute_command("ACL", "SETUSER", name, "-vadd")
    no_vadd = stream_settings(redis={"username": name, "password": password, "key_prefix": prefix})
    _stream(no_vadd, n=5)
    worker = WorkerThread(no_vadd).start()
    worker.thread.join(60)
    assert not worker.thread.is_alive(), "a missing permission stops the worker"
    assert isinstance(worker.error, SinkError) and "lacks a permission" in str(worker.error)
    assert password not in str(worker.error)


TLS_PROXY = """
import asyncio, ssl, sys
cert, key, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

async def pipe(src, dst):
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        dst.close()

async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture
def tls_proxy(redis_client, tmp_path):
    """A TLS-terminating proxy in front of the local Redis (whose redis-server has no TLS),
    in a process of its own; yields (port, CA certificate)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    target = redis_client.connection_pool.connection_kwargs.get("port", 6379)
    proc = subprocess.Popen([sys.executable, "-c", TLS_PROXY, str(cert), str(key), str(target)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    yield port, cert
    proc.kill()
    proc.wait()


def test_rediss_tls_connection(stream_settings, redis_client, tls_proxy):
    port, cert = tls_proxy
    settings = stream_settings(redis={"url": f"rediss://localhost:{port}/0", "ssl_ca_certs": str(cert)})
    _stream(settings, n=20)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=60, message="commit over TLS",
                   diagnose=lambda: f"stats {worker.worker.stats()}, error {worker.error!r}")
    finally:
        worker.stop()
    assert redis_client.execute_command("VCARD", VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1).base) == 20


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_sasl_authenticates(stream_settings, redis_client, mechanism):
    settings = stream_settings()
    _stream(settings, n=30)  # produced over the PLAINTEXT listener of the same broker
    sasl = stream_settings(kafka={"bootstrap_servers": SASL_BOOTSTRAP, "topic": settings.kafka.topic,
                                  "group_id": settings.kafka.group_id,
                                  "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
                                               "sasl_username": SASL_USER, "sasl_password": SASL_PASSWORD}})
    worker = WorkerThread(sasl).start()
    try:
        wait_until(lambda: all_committed(settings), timeout=60, message=f"commit over SASL {mechanism}")
    finally:
        worker.stop()
    assert redis_client.execute_command("VCARD", VectorSetIndex(settings.redis.key_prefix, "tiny-bert", 1).base) == 30


def test_wrong_kafka_credentials_fail_fast_with_a_clear_message(stream_settings, tmp_path):
    password_file = tmp_path / "kafka-password"
    password_file.write_text("definitely-wrong-password\n")
    settings = stream_settings(kafka={"bootstrap_servers": SASL_BOOTSTRAP, "request_timeout_ms": 10000,
                                      "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
                                                   "sasl_username": SASL_USER,
                                                   "sasl_password_file": str(password_file)}})
    worker = WorkerThread(settings)
    with pytest.raises(SourceError) as err:
        worker.worker.setup()
    message = str(err.value)
    assert f"user '{SASL_USER}'" in message and "SCRAM-SHA-256" in message
    assert "definitely-wrong-password" not in message


def test_secrets_never_reach_logs_status_errors_or_parquet(stream_settings, acl_user, capfd, caplog):
    name, password, prefix = acl_user
    settings = stream_settings(
        redis={"username": name, "password": password, "key_prefix": prefix,
               "url": f"redis://{name}:{password}@127.0.0.1:6379/0"},
        kafka={"bootstrap_servers": SASL_BOOTSTRAP,
               "security": {"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": SASL_USER,
                            "sasl_password": SASL_PASSWORD}})
    caplog.set_level(logging.DEBUG)
    _stream(settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"bootstrap_servers": "localhost:9092", "security": settings.kafka.security.model_copy(
            update={"protocol": "PLAINTEXT", "sasl_mechanism": None})})}), n=20)
    worker = WorkerThread(settings).start()
    try:
        wait_until(lambda: worker.worker.stats().get("written", 0) >= 20, timeout=60, message="writes")
        stats = json.dumps(worker.worker.stats())
    finally:
        worker.stop()
    status = json.dumps(collect_status(settings), default=str)
    redacted = json.dumps(settings.redacted())
    bad = stream_settings(redis={"url": f"redis://{name}:wrong-{password}@127.0.0.1:6379/0", "key_prefix": prefix})
    with pytest.raises(SinkError) as err:
        WorkerThread(bad).worker.setup()
    out, errs = capfd.readouterr()
    table = read_parquet(settings)
    metadata = json.dumps({k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()})
    for where, text in {"captured stdout/stderr": out + errs, "log records": caplog.text, "worker stats": stats,
                        "status --json": status, "redacted config": redacted, "exception": str(err.value),
                        "parquet metadata": metadata}.items():
        assert password not in text, f"the Redis password leaked into {where}"
        assert SASL_PASSWORD not in text, f"the Kafka password leaked into {where}"
