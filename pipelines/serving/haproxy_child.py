#!/usr/bin/env python3
"""Runs Ray Serve's HAProxy so that it dies with the process that started it.

Ray Serve starts HAProxy (and each reload's successor) from its HAProxyManager actor, and nothing
stops it when that actor's process is killed: after a `kill -9` of `embedworker serve` the old
HAProxy would keep serving.port, and the next `serve` on the same port could not start. This
wrapper, named in RAY_SERVE_HAPROXY_BINARY_PATH by `serve.ingress: haproxy`, asks the kernel to
send the HAProxy it becomes a SIGTERM when its parent dies (PR_SET_PDEATHSIG outlives exec), then
execs the real binary (EMBEDWORKER_HAPROXY_BINARY) with the same arguments. Standard library only.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    binary = os.environ["EMBEDWORKER_HAPROXY_BINARY"]
    parent = os.getppid()
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        sys.exit(f"haproxy_child: prctl(PR_SET_PDEATHSIG) failed (errno {ctypes.get_errno()})")
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)
    os.execv(binary, [binary, *sys.argv[1:]])


if __name__ == "__main__":
    main()
