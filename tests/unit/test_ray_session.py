"""init_ray leaves the caller's SIGTERM handler in force while Ray starts (a local Ray it starts
itself: marked integration, as it starts Ray's processes)."""

import signal

import pytest
import ray

from pipelines.config import load_settings
from pipelines.ray_session import init_ray

pytestmark = pytest.mark.integration


def test_the_callers_sigterm_handler_survives_ray_init():
    seen = []

    def handler(signum, _frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    ray.shutdown()  # a session-wide Ray of other tests: this test starts its own
    try:
        init_ray(load_settings(None, {"ray": {"num_cpus": 1}}))
        assert signal.getsignal(signal.SIGTERM) is handler, "ray.init replaced the SIGTERM handler"
        signal.raise_signal(signal.SIGTERM)
        assert seen == [signal.SIGTERM]
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)


def test_without_a_handler_of_the_callers_ray_installs_its_own():
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ray.shutdown()  # a session-wide Ray of other tests: this test starts its own
    try:
        init_ray(load_settings(None, {"ray": {"num_cpus": 1}}))
        assert callable(signal.getsignal(signal.SIGTERM)), "a SIGTERM would skip Ray's shutdown"
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous)
