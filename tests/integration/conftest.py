"""Fixtures of the integration tests."""

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray for the tests of one module (the actors of StreamSupervisor run on it)."""
    import ray

    ray.init(num_cpus=4, include_dashboard=False, namespace="embedworker-tests", configure_logging=False)
    yield
    ray.shutdown()
