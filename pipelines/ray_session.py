"""The driver's Ray session: connect to the configured cluster or start a local one, and the
names replica actors get (so `status` finds them).
"""

from __future__ import annotations

import logging
import os
import signal

import ray
import ray._private.utils

import pipelines
from pipelines.config import EmbedworkerSettings

ACTOR_PREFIX = "embedworker:"


def init_ray(settings: EmbedworkerSettings) -> None:
    """Connect to the configured Ray cluster, or start a local one (once per process).

    A SIGTERM handler the caller installed (`run`, `serve`) stays in force while Ray starts:
    started from the main thread, `ray.init` replaces it with one that raises SystemExit wherever
    the main thread happens to be, and a SIGTERM landing in one of the fork hooks Ray's start runs
    was swallowed there ("Exception ignored"), so `run` lost the stop and never ended. Ray installs
    it through `ray._private.utils.set_sigterm_handler`, made a no-op for the call (checked by
    tests/unit/test_ray_session.py: a Ray that installs it otherwise fails a test). `ray.init` must
    run in the main thread: from another, Ray's shutdown later waits for a GCS it lost. With no
    handler of the caller's (the default action), Ray's is installed as before: a SIGTERM exits
    through Python, and the local Ray is shut down on the way out."""
    if ray.is_initialized():
        return
    if pipelines.QUIET_NATIVE_SIGTERM:  # this process only (see pipelines/__init__.py)
        os.environ.pop("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", None)
    kwargs = dict(namespace=settings.ray.namespace, include_dashboard=False, log_to_driver=True,
                  configure_logging=False)
    if settings.ray.address:
        kwargs["address"] = settings.ray.address
    else:  # "local": a Ray of its own, never a cluster someone `ray start`ed on this machine
        quiet_local_ray_auth()
        kwargs["address"] = "local"
        kwargs["num_cpus"] = settings.ray.num_cpus
    if not callable(signal.getsignal(signal.SIGTERM)):  # no handler of the caller's: Ray's (exit, clean up)
        ray.init(**kwargs)
        return
    utils = ray._private.utils
    installer = utils.set_sigterm_handler
    utils.set_sigterm_handler = lambda handler: None
    try:
        ray.init(**kwargs)
    finally:
        utils.set_sigterm_handler = installer


def quiet_local_ray_auth() -> None:
    """For the local Ray the project starts (and finds again in `status`): Ray's default, token
    authentication, stays on, but its 'Token authentication is enabled…' banner is not printed
    on every command (that logger says nothing else). Clusters are left alone."""
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


def actor_name(settings: EmbedworkerSettings, replica: int, run_id: str) -> str:
    """Named actors let `embedworker status` find the replicas of a running group; the run id
    keeps a restarted driver clear of the names its dying predecessor still holds."""
    return f"{ACTOR_PREFIX}{settings.kafka.group_id}:{replica}:{run_id}"
