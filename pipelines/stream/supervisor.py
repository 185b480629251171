"""Streaming supervision: start EmbeddingWorker actors on Ray, watch them, scale, drain on stop.

Each replica is a Ray actor with `workers.num_gpus` GPUs (1 by default, a fraction to share a
GPU, 0 on a CPU machine) and `max_restarts` restarts. All replicas join one Kafka consumer
group as static members, so Kafka spreads the partitions over them and a replica Ray restarted
takes its own back. The count is `workers.replicas`, or follows the backlog with
`workers.autoscale` (pipelines/stream/scaling.py). SIGTERM/SIGINT (`request_stop`) make every replica
stop polling, finish its in-flight batches, flush its sinks, commit, leave the group and return.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from pipelines.config import EmbedworkerSettings
from pipelines.maintenance.lake_admin import AutoCompactor
from pipelines.maintenance.retention_sweep import RetentionSweeper
from pipelines.ray_session import actor_name, init_ray
from pipelines.stream.replica_status import log_replica_summary
from pipelines.stream.scaling import ReplicaScaling
from workers.errors import EmbedworkerError, ThreadStuckError
from workers.kafka.source import leave_group
from workers.stream.worker import EmbeddingWorker

log = logging.getLogger("embedworker.stream")


SETUP_ATTEMPTS = 5


class ReplicaStartError(EmbedworkerError):
    """A replica kept dying while it was set up: the stream could not start."""


def _sentence(exc: RayTaskError) -> str:
    """The replica's own one-sentence reason (ReplicaError names the thread), not Ray's traceback."""
    cause = getattr(exc, "cause", None)
    return f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]


def _fatal_cause(exc: RayTaskError) -> EmbedworkerError | None:
    """The project's own error behind a failed actor call (bad config, credentials, model):
    restarting will not help, so the supervisor stops and reports it."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, EmbedworkerError) else None


class StreamSupervisor:
    """Replicas are keyed by index (0, 1, ...): the index names the actor, the Kafka client id
    and the static group member, so a restarted or re-added replica takes the same place."""

    def __init__(self, settings: EmbedworkerSettings, stop_offsets: dict[str, int] | None = None,
                 worker_class: type = EmbeddingWorker):
        self.settings = settings
        self.worker_class = worker_class  # benchmarks pass a subclass (e.g. with a stub forward)
        self.stop_offsets = stop_offsets  # bounded replays: "topic:partition" -> end offset
        self.actors: dict[int, object] = {}  # replica -> actor handle (starting, running or draining)
        self._runs: dict = {}          # run ref -> replica
        self._setups: dict = {}        # setup ref -> replica, for replicas added while running
        self._draining: dict = {}      # run ref -> (replica, deadline), for replicas being removed
        self._setup_tries: dict[int, int] = {}
        self._stop = threading.Event()
        self._last_failure: dict[int, float] = {}
        self.restarts = 0
        self.run_id = uuid.uuid4().hex[:8]
        self.scaling = ReplicaScaling(self)
        self._requested: int | None = None  # scale_to()'s count, applied by the supervise loop
        self.target = 0  # the replicas wanted: workers.replicas, min_replicas at start, then scale_to()
        self._removed: list[dict] = []  # final stats of replicas removed while running (stop() returns them too)

    @property
    def running(self) -> int:
        """Replicas that run or are being set up (those being removed do not count)."""
        return len(self.actors) - len(self._draining)

    def start(self) -> None:
        init_ray(self.settings)
        w = self.settings.workers
        count = self.target = w.autoscale.min_replicas if w.autoscale.enabled else w.replicas
        for i in range(count):
            self._new_actor(i)
        # Load models and connect everywhere first, so the replicas join the consumer group
        # together instead of taking partitions from each other one by one.
        self._set_up_all()
        for i in range(count):
            self._start_run(i)
        self.scaling.setup()
        log.info("started %d replica(s) (num_gpus=%s, num_cpus=%s) for topic %s, group %s%s", count, w.num_gpus,
                 w.num_cpus, self.settings.kafka.topic, self.settings.kafka.group_id,
                 f"; autoscaling between {w.autoscale.min_replicas} and {w.autoscale.max_replicas}"
                 if w.autoscale.enabled else "")

    def _new_actor(self, replica: int):
        w = self.settings.workers
        actor_class = ray.remote(self.worker_class)
        self.actors[replica] = actor_class.options(
            name=actor_name(self.settings, replica, self.run_id), num_gpus=w.num_gpus, num_cpus=w.num_cpus,
            max_restarts=w.max_restarts, max_concurrency=4).remote(
                **self.settings.worker_kwargs(), replica=replica, stop_offsets=self.stop_offsets)
        self._setup_tries[replica] = 1
        return self.actors[replica]

    def _set_up_all(self) -> None:
        """Every replica's setup(), waited for together (see `_setup_finished`)."""
        self._setups = {a.setup.remote(): i for i, a in self.actors.items()}
        while self._setups:
            done, _ = ray.wait(list(self._setups), num_returns=1)
            for ref in done:
                self._setup_finished(ref)

    def _setup_finished(self, ref) -> int | None:
        """A replica's setup() returned. A replica that died meanwhile (its process killed, its
        node lost, out of memory while the model loads) is restarted by Ray and set up again, up
        to SETUP_ATTEMPTS times; the project's own errors (configuration, credentials, model)
        stop the stream at once, in one sentence. The replica, when it is ready."""
        replica = self._setups.pop(ref)
        if replica not in self.actors:
            return None  # removed while it was set up
        try:
            ray.get(ref)
            return replica
        except RayTaskError as exc:
            fatal = _fatal_cause(exc)
            if fatal is None and self._runs:
                # a replica added to a running stream failed (say, its new GPU node is broken):
                # the others go on; the autoscaler asks again after its cooldown
                log.error("replica %d could not be set up, the stream goes on without it: %s", replica,
                          str(exc.cause if getattr(exc, "cause", None) else exc).splitlines()[0])
                ray.kill(self.actors.pop(replica), no_restart=True)
                return None
            self.stop()
            if fatal is not None:
                raise fatal from None
            raise
        except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
            tries = self._setup_tries[replica]
            if tries >= SETUP_ATTEMPTS:
                self.stop()
                raise ReplicaStartError(f"replica {replica} died {tries} times while it was set up "
                                        f"(last: {type(exc).__name__}); see its log for why") from None
            self._setup_tries[replica] = tries + 1
            self.restarts += 1
            log.warning("replica %d died while it was set up (%s); Ray restarts it, setting it up again "
                        "(attempt %d of %d)", replica, type(exc).__name__, tries + 1, SETUP_ATTEMPTS)
            time.sleep(0.5)  # the actor is coming back: calls made meanwhile fail at once
            self._setups[self.actors[replica].setup.remote()] = replica
            return None

    def _start_run(self, replica: int) -> None:
        self._runs[self.actors[replica].run.remote()] = replica

    def scale_to(self, replicas: int) -> None:
        """Thread-safe: the supervise loop adds or drains replicas until `replicas` run (the
        autoscaler decides the same way; an operator or a test may ask directly)."""
        self._requested = self.target = max(1, replicas)

    def _apply_requested(self) -> None:
        wanted, self._requested = self._requested, None
        if wanted is None:
            return
        while self.running < wanted:
            self.add_replica()
        while self.running > wanted and self.remove_replica() is not None:
            pass

    def add_replica(self) -> int:
        """Start one more replica (the lowest free index) while the others run: it is set up in
        the background and starts consuming when ready. Ray places it (on KubeRay a pending
        GPU actor makes the autoscaler add a node)."""
        replica = next(i for i in range(len(self.actors) + 1) if i not in self.actors)
        self._setups[self._new_actor(replica).setup.remote()] = replica
        return replica

    def remove_replica(self) -> int | None:
        """Drain the highest-numbered replica (stop polling, finish, flush, commit, leave the
        group); it is removed when its drain returns. One still being set up is removed at once."""
        candidates = [i for i in self.actors if i not in self._draining_replicas()]
        if len(candidates) <= 1:
            return None
        replica = max(candidates)
        actor = self.actors[replica]
        run = next((ref for ref, r in self._runs.items() if r == replica), None)
        if run is None:  # still being set up: it never polled, so it holds no partitions
            del self.actors[replica]
            ray.kill(actor, no_restart=True)
            return replica
        del self._runs[run]
        actor.stop.remote()
        self._draining[run] = (replica, time.monotonic() + self.settings.workers.drain_timeout_s + 30)
        return replica

    def _draining_replicas(self) -> set[int]:
        return {r for r, _ in self._draining.values()}

    def _drain_finished(self, ref) -> None:
        """A removed replica's run returned: drained, it left the group itself. If it died or did
        not finish in time, its static membership is ended here, so its partitions move now."""
        replica, _ = self._draining.pop(ref)
        actor = self.actors.pop(replica, None)
        try:
            stats = ray.get(ref, timeout=0)
            log.info("replica %d removed after draining: written %s", replica, stats.get("written"))
            self._removed.append(stats)
        except (GetTimeoutError, RayActorError, RayTaskError, ActorDiedError, ActorUnavailableError) as exc:
            log.warning("replica %d did not drain (%s); its uncommitted records will be read again by the others",
                        replica, type(exc).__name__)
            self._removed.append({"replica": replica, "state": f"failed ({type(exc).__name__})"})
            leave_group(self.settings.kafka, [replica])
        if actor is not None:
            ray.kill(actor, no_restart=True)

    def request_stop(self) -> None:
        """Thread- and signal-safe: the supervise loop drains and returns."""
        self._stop.set()

    def supervise(self, until=None, poll_s: float = 1.0) -> list[dict]:
        """Watch the replicas until request_stop() (or `until()` returns True); then drain them.
        Restarts a replica's run after its actor died, sets up added replicas, finishes removed
        ones, scales; raises the first fatal error."""
        last_summary = time.monotonic()
        last_counts: dict = {}
        # beside the stream, each in a thread of its own: the lake's closed days compacted
        # (parquet.compact_after_days), aged-out vectors swept from Redis (redis.retention)
        maintenance = [AutoCompactor(self.settings), RetentionSweeper(self.settings, self.scaling.metrics.registry)]
        threads: dict[int, threading.Thread] = {}
        while not self._stop.is_set() and not (until and until()):
            refs = [*self._runs, *self._setups, *self._draining]
            done = ray.wait(refs, num_returns=1, timeout=poll_s)[0] if refs else []
            if not refs:
                time.sleep(poll_s)
            for ref in done:
                if ref in self._runs:
                    self._handle_finished(ref)
                elif ref in self._setups:
                    ready = self._setup_finished(ref)
                    if ready is not None:
                        self._start_run(ready)
                elif ref in self._draining:
                    self._drain_finished(ref)
            for ref, (_, deadline) in list(self._draining.items()):
                if time.monotonic() > deadline:
                    self._drain_finished(ref)
            self._apply_requested()
            self.scaling.tick()
            for i, task in enumerate(maintenance):
                if (i not in threads or not threads[i].is_alive()) and task.due():
                    threads[i] = threading.Thread(target=task.tick, name=type(task).__name__, daemon=True)
                    threads[i].start()
            if time.monotonic() - last_summary >= self.settings.logging.summary_interval_s:
                last_counts = log_replica_summary(self.stats(timeout=5.0), last_counts, time.monotonic() - last_summary)
                last_summary = time.monotonic()
        return self.stop()

    def _handle_finished(self, ref) -> None:
        replica = self._runs.pop(ref)
        try:
            stats = ray.get(ref)
            log.warning("replica %d returned without being asked to stop: %s; starting it again", replica, stats)
        except RayTaskError as exc:
            fatal = _fatal_cause(exc)
            if fatal is not None:
                self.stop()
                raise fatal from None
            cause = getattr(exc, "cause", None)
            if isinstance(cause, ThreadStuckError):
                # a thread of the failed run would not stop: set up again in that process, the
                # replica would hold two models; its process is restarted instead (Ray)
                log.error("replica %d failed and %s; restarting its process", replica, cause)
                ray.kill(self.actors[replica], no_restart=False)
            else:
                log.error("replica %d failed: %s; starting it again", replica, _sentence(exc))
            time.sleep(1.0)
        except (RayActorError, ActorDiedError, ActorUnavailableError) as exc:
            now = time.monotonic()
            if now - self._last_failure.get(replica, 0.0) > 5.0:  # a new failure, not the same restart
                self.restarts += 1
                log.warning("replica %d died (%s); Ray restarts it (restart %d)", replica, type(exc).__name__,
                            self.restarts)
            self._last_failure[replica] = now
            time.sleep(0.5)  # the actor is coming back: calls made meanwhile fail at once
        self._start_run(replica)

    def stats(self, timeout: float = 10.0) -> list[dict]:
        """Every replica's stats, asked together; one that does not answer in `timeout` is
        "unavailable"."""
        refs = {i: actor.stats.remote() for i, actor in sorted(self.actors.items())}
        if refs:
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
        out = []
        for i, ref in refs.items():
            try:
                out.append(ray.get(ref, timeout=0))
            except (GetTimeoutError, RayActorError, ActorDiedError, ActorUnavailableError) as exc:
                out.append({"replica": i, "state": f"unavailable ({type(exc).__name__})"})
        return out

    def stop(self) -> list[dict]:
        """Drain every replica (stop polling, finish, flush, commit, leave the group) and return
        their final stats, and those of replicas removed before. Replicas still being set up are
        stopped at once."""
        self._stop.set()
        for actor in self.actors.values():
            try:
                actor.stop.remote()
            except RayActorError:
                pass
        timeout = self.settings.workers.drain_timeout_s + 30
        results = []
        runs = {**self._runs, **{ref: replica for ref, (replica, _) in self._draining.items()}}
        for ref, replica in runs.items():
            try:
                results.append(ray.get(ref, timeout=timeout))
            except (GetTimeoutError, RayActorError, RayTaskError) as exc:
                log.error("replica %d did not drain cleanly: %s", replica, exc)
                results.append({"replica": replica, "state": f"failed ({type(exc).__name__})"})
        self._runs.clear()
        self._draining.clear()
        self._setups.clear()
        for actor in self.actors.values():
            ray.kill(actor, no_restart=True)
        self.actors = {}
        self.scaling.close()
        return results + self._removed
