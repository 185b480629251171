"""How many replicas the backlog needs: the autoscaler's decision (the supervisor acts on it).

    desired = clamp(ceil((input rate + lag / catch_up_s) / rate per replica),
                    min_replicas, min(max_replicas, partitions))

- input rate: how fast the topic's end offsets grew over the last minute (read from Kafka by the
  driver), in records per second;
- lag: end offsets minus the group's committed offsets, so what is polled but not yet written
  counts as backlog;
- rate per replica: what one replica processes per second when it has work (the true processing
  rate, as Flink's autoscaler measures it): the documents the replicas wrote over the last 30 s
  divided by the seconds their busiest stage (encode or sink) worked meanwhile. An idle replica
  does not lower it; unknown until a replica has written something.

Never more replicas than partitions (an extra consumer gets none) nor than `max_replicas`, never
fewer than `min_replicas`. Up at once (after `cooldown_s` since the last change); down only to
the most replicas wanted at any moment of the last `scale_down_after_s`, so a bursty input does
not make the count oscillate. The first scale-up waits for no cooldown: a backlog found at the
start is answered as soon as a replica's rate is measured (seconds, since replicas hold only
`workers.max_in_flight_s` of work and write within it).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from workers.settings import AutoscaleSettings

INPUT_WINDOW_S = 60.0  # the input rate is the end offsets' growth over this long
RATE_WINDOW_S = 30.0   # a replica's processing rate is measured over this long
MIN_DOCS = 10          # a replica's window says something about its rate from this many documents


@dataclass
class Observation:
    """One measurement: taken every `autoscale.interval_s` by the supervisor."""
    at: float                  # monotonic seconds
    end_offsets: int           # sum of the topic's end offsets
    lag: int                   # sum of end minus committed offsets
    partitions: int
    replicas: list[dict] = field(default_factory=list)  # stats of the running replicas


@dataclass(frozen=True)
class ScaleDecision:
    previous: int
    replicas: int
    reason: str     # "lag 2,400, 12 docs/s in, 40 docs/s per replica, catch-up 60 s"
    cause: str      # a metric label: backlog, idle, bounds

    def __str__(self) -> str:
        return f"scaling {self.previous} → {self.replicas}: {self.reason}"


class ReplicaAutoscaler:
    def __init__(self, settings: AutoscaleSettings, started_at: float):
        self.settings = settings
        self.rate_per_replica: float | None = None
        self.input_rate = 0.0
        self.desired: int | None = None
        self.last_reason = "starting"
        self._ends: deque[tuple[float, int]] = deque()
        self._wanted: deque[tuple[float, int]] = deque()
        self._history: dict[int, deque] = {}  # replica -> (at, written, encode busy s, sink busy s) in the window
        self._started_at = started_at
        self._last_change: float | None = None  # no change yet: the first scale-up waits for no cooldown

    def observe(self, obs: Observation, running: int) -> ScaleDecision | None:
        """Take one observation; a decision when the count of `running` replicas should change."""
        s = self.settings
        self._measure_input(obs)
        self._measure_replicas(obs)
        cap = max(1, min(s.max_replicas, obs.partitions or s.max_replicas))
        if obs.lag <= 0 and self.input_rate <= 0:
            wanted, cause = s.min_replicas, "idle"
        elif self.rate_per_replica is None:
            wanted, cause = max(running, s.min_replicas), "bounds"  # nothing measured yet
        else:
            need = (self.input_rate + obs.lag / s.catch_up_s) / self.rate_per_replica
            wanted, cause = max(s.min_replicas, min(math.ceil(need - 1e-9), cap)), "backlog"
        self.desired = wanted
        self.last_reason = self._reason(obs)
        self._wanted.append((obs.at, wanted))
        while self._wanted and self._wanted[0][0] < obs.at - s.scale_down_after_s:
            self._wanted.popleft()
        if self._last_change is not None and obs.at - self._last_change < s.cooldown_s:
            return None
        since = obs.at - (self._started_at if self._last_change is None else self._last_change)
        target = running
        if wanted > running:
            target = wanted
        elif wanted < running and since >= s.scale_down_after_s:
            target = min(running, max(w for _, w in self._wanted))  # the most wanted within the window
        if target == running:
            return None
        self._last_change = obs.at
        return ScaleDecision(running, target, self.last_reason, cause)

    def _reason(self, obs: Observation) -> str:
        rate = "not measured yet" if self.rate_per_replica is None else f"{self.rate_per_replica:,.0f} docs/s"
        return (f"lag {obs.lag:,}, {self.input_rate:,.0f} docs/s in, {rate} per replica, "
                f"catch-up {self.settings.catch_up_s:g} s")

    def _measure_input(self, obs: Observation) -> None:
        self._ends.append((obs.at, obs.end_offsets))
        while len(self._ends) > 2 and self._ends[1][0] <= obs.at - INPUT_WINDOW_S:
            self._ends.popleft()
        (t0, e0), (t1, e1) = self._ends[0], self._ends[-1]
        self.input_rate = max(0.0, (e1 - e0) / (t1 - t0)) if t1 > t0 else 0.0

    def _measure_replicas(self, obs: Observation) -> None:
        written = busy = 0.0
        for stats in obs.replicas:
            if "written" not in stats:
                continue  # not running (starting, unavailable)
            history = self._history.setdefault(stats["replica"], deque())
            sample = (obs.at, stats["written"], stats.get("encode_busy_s", 0.0), stats.get("sink_busy_s", 0.0))
            if history and sample[1] < history[-1][1]:
                history.clear()  # restarted: its counts began again
            history.append(sample)
            while len(history) > 2 and history[1][0] <= obs.at - RATE_WINDOW_S:
                history.popleft()
            first = history[0]
            if sample[1] - first[1] >= MIN_DOCS:
                written += sample[1] - first[1]
                busy += max(sample[2] - first[2], sample[3] - first[3])
        if written and busy > 0:
            self.rate_per_replica = written / busy
