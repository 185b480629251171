"""How the replica's threads run, so that none dies silently and a simulation can drive them.

Each stage of the replica (encode, sinks) does its work in `step()`: one bounded round that
never sleeps. Its thread only loops `run_once()` (the step, with any exception captured as the
stage's `error`) and waits for work in between; the polling thread checks every stage's error
and thread at each poll (`check_threads`), so an unexpected exception in any thread is the
replica's failure within one poll: one sentence, the replica stops and is restarted. A test or
the simulation (tests/simulation/) calls `run_once()` itself, in an order of its choosing, under a
clock of its own: time is read through a `Clock`, never from `time` directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from workers.errors import EmbedworkerError, ReplicaError, ThreadStuckError

log = logging.getLogger("embedworker.threads")


class Clock:
    """Time as the stages read it: monotonic seconds for waits and rates, wall seconds for
    record times. The simulation replaces it with a clock it advances itself."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


SYSTEM_CLOCK = Clock()


class Stage:
    """A stage run by a thread of its own: the thread loops `run_once()` until `stop()` or an
    error; `error` holds the exception that ended it (None while it is healthy)."""

    name = "stage"

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> bool:
        """One bounded round of work (never sleeps). True if it did anything."""
        raise NotImplementedError

    def idle(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for work (called by the thread after an idle step)."""
        self._stop_requested.wait(timeout)

    def run_once(self) -> bool:
        """`step()` with its exception captured as `error` (the thread, or the simulation, calls
        this). Returns whether the step did anything."""
        try:
            return self.step()
        except BaseException as exc:  # noqa: BLE001 - the polling thread reports it and stops the replica
            log.error("the %s thread failed: %s: %s", self.name, type(exc).__name__, exc)
            self.error = exc
            return False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop_requested.is_set() and self.error is None:
            if not self.run_once() and self.error is None:
                self.idle(0.05)

    def stop(self, timeout: float) -> bool:
        """Ask the thread to end after its current step; True if it ended within `timeout`."""
        self._stop_requested.set()
        return join(self._thread, timeout)

    def failure(self) -> BaseException | None:
        """What ended the thread: its error, or a thread gone without one (never started: None)."""
        if self.error is not None:
            return self.error
        if self._thread is not None and not self._thread.is_alive() and not self._stop_requested.is_set():
            return RuntimeError(f"the {self.name} thread ended")
        return None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None


def join(thread: threading.Thread | None, timeout: float) -> bool:
    if thread is None or thread is threading.current_thread():
        return True
    thread.join(timeout)
    return not thread.is_alive()


def check_threads(checks: Sequence[tuple[str, Callable[[], BaseException | None]]]) -> None:
    """Raise the first failure among `(thread name, check)`: a check returns the exception that
    ended its thread, or None while the thread is healthy. The project's own errors (a sink that
    will never work, credentials) are raised as they are, and stop the stream in words;
    anything else is a ReplicaError naming the thread, and the replica is restarted."""
    for name, check in checks:
        exc = check()
        if exc is None:
            continue
        if isinstance(exc, EmbedworkerError | ReplicaError):
            raise exc
        raise ReplicaError(f"the {name} thread died: {type(exc).__name__}: {exc}") from exc


def stop_all(stages: list[Stage], timeout: float) -> None:
    """Stop every stage's thread; ThreadStuckError naming those that did not end in `timeout`."""
    for stage in stages:
        stage._stop_requested.set()
    deadline = time.monotonic() + timeout
    stuck = [s.name for s in stages if not join(s._thread, max(0.0, deadline - time.monotonic()))]
    if stuck:
        raise ThreadStuckError(f"the {', '.join(stuck)} thread(s) did not stop within {timeout:g} s")


class ThroughputMeter:
    """Items a stage finished per second of its own busy time, over its last `window` rounds:
    what the stage can do when it has work (a replica idle half the time still measures its
    full rate). None until a round is measured."""

    def __init__(self, window: int = 32):
        self._rounds: list[tuple[int, float]] = []
        self._window = window
        self.rate: float | None = None

    def add(self, items: int, seconds: float) -> None:
        self._rounds.append((items, max(seconds, 1e-6)))
        if len(self._rounds) > self._window:
            del self._rounds[0]
        self.rate = sum(n for n, _ in self._rounds) / sum(s for _, s in self._rounds)
