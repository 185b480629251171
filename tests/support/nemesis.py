"""The nemesis: faults on the wire between a worker and real Kafka and Redis (Toxiproxy:
latency, blackholes, resets, refusals) and frozen services (SIGSTOP), judged by
tests/support/nemesis_checker.py. Used by tests/reliability/test_nemesis.py (every fault once) and
bench/nemesis.py (rounds from a seed).

The worker talks to the services through the proxies; the checker (its producer, its offset
and final-state reads) talks to them directly, so a fault never blinds the judge."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from pipelines.config import EmbedworkerSettings
from tests.helpers import service
from tests.support.toxiproxy import Toxiproxy

WORDS = ["속보", "정부", "발표", "금리", "반도체", "수출", "날씨", "태풍", "야구", "선거", "breaking", "market", "rates", "chip"]


@dataclass
class NemesisServices:
    """A private Kafka (a direct listener and one behind Toxiproxy), a private Redis (append-only,
    so a freeze loses nothing), Toxiproxy with a proxy for each, and the lake: on a small
    filesystem of its own (`lake="disk"`: a tmpfs, which needs root to mount; without it the
    lake is a plain folder and the disk fault is left out) or on a private s3proxy behind a
    proxy (`lake="s3"`). Ports from `base` up (10)."""

    run_dir: Path
    base: int = 18300  # clear of the local cluster's ports (infra/local/cluster.sh: 17000-17005, 19092-19494)
    lake: str = "disk"
    disk_mb: int = 256
    small_disk: Path | None = None  # the tmpfs, when mounted
    no_small_disk: str = ""         # why there is none

    kafka_port = property(lambda self: self.base)               # direct: base, controller +1, SASL +2
    kafka_proxied_port = property(lambda self: self.base + 3)   # the broker's listener behind the proxy
    kafka_proxy_port = property(lambda self: self.base + 4)     # the proxy in front of it (advertised)
    redis_port = property(lambda self: self.base + 5)
    redis_proxy_port = property(lambda self: self.base + 6)
    api_port = property(lambda self: self.base + 7)             # Toxiproxy's API
    s3_port = property(lambda self: self.base + 8)
    s3_proxy_port = property(lambda self: self.base + 9)

    def _kafka_env(self) -> dict:
        return {"KAFKA_PORT": self.kafka_port, "KAFKA_PROXIED_PORT": self.kafka_proxied_port,
                "KAFKA_PROXIED_ADVERTISED_PORT": self.kafka_proxy_port}

    def _services(self) -> list[tuple[str, dict]]:
        out = [("toxiproxy.sh", {"TOXIPROXY_PORT": self.api_port}), ("kafka.sh", self._kafka_env()),
               ("redis.sh", {"REDIS_PORT": self.redis_port, "REDIS_PERSIST": 1})]
        return out + ([("s3.sh", {"S3_PORT": self.s3_port})] if self.lake == "s3" else [])

    def start(self) -> NemesisServices:
        for script, env in self._services():
            service(script, "start", self.run_dir, **env)
        tp = self.toxiproxy
        tp.reset()
        tp.create("kafka", self.kafka_proxy_port, f"localhost:{self.kafka_proxied_port}")
        tp.create("redis", self.redis_proxy_port, f"127.0.0.1:{self.redis_port}")
        if self.lake == "s3":
            tp.create("s3", self.s3_proxy_port, f"127.0.0.1:{self.s3_port}")
        else:
            self._mount_small_disk()
        return self

    def _mount_small_disk(self) -> None:
        where = self.run_dir / "small-disk"
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.disk_mb}m", "tmpfs", str(where)],
                              capture_output=True, text=True)
        if done.returncode == 0:
            self.small_disk = where
        else:
            self.no_small_disk = f"no small filesystem for the disk fault: mount said {done.stderr.strip()[:120]!r}"

    def stop(self) -> None:
        from tests.helpers import forget_admin

        for port in (self.kafka_port, self.kafka_proxy_port):
            forget_admin(f"localhost:{port}")
        for pid in (self.kafka_pid, self.redis_pid):  # a frozen service would not stop
            try:
                os.kill(pid(), signal.SIGCONT)
            except (OSError, ValueError):
                pass
        for script, env in reversed(self._services()):
            try:
                service(script, "stop", self.run_dir, **env)
            except subprocess.SubprocessError:
                pass
        if self.small_disk:
            subprocess.run(["umount", "-l", str(self.small_disk)], capture_output=True)
            self.small_disk = None

    @property
    def toxiproxy(self) -> Toxiproxy:
        return Toxiproxy(self.api_port)

    def kafka_pid(self) -> int:
        return int((self.run_dir / f"kafka-{self.kafka_port}" / "kafka.pid").read_text())

    def redis_pid(self) -> int:
        return int((self.run_dir / f"redis-{self.redis_port}" / "redis.pid").read_text())

    def settings_pair(self, settings: EmbedworkerSettings) -> tuple[EmbedworkerSettings, EmbedworkerSettings]:
        """(the worker's settings: through the proxies, the checker's: direct), from one test's,
        with the lake where this nemesis keeps it."""
        def with_(kafka: int, redis_port: int, s3_port: int) -> EmbedworkerSettings:
            parquet = settings.parquet
            if self.lake == "s3":
                s3 = parquet.s3.model_copy(update={"endpoint_url": f"http://127.0.0.1:{s3_port}", "region": "us-east-1",
                                                   "access_key_id": "embedworker", "allow_http": True,
                                                   "secret_access_key": SecretStr("embedworker-local-dev")})
                parquet = parquet.model_copy(update={"path": f"s3://embedworker/{settings.kafka.topic}/lake", "s3": s3})
            elif self.small_disk:
                parquet = parquet.model_copy(update={"path": str(self.small_disk / settings.kafka.topic / "lake")})
            return settings.model_copy(update={
                "kafka": settings.kafka.model_copy(update={"bootstrap_servers": f"localhost:{kafka}"}),
                "redis": settings.redis.model_copy(update={"url": f"redis://127.0.0.1:{redis_port}/0"}),
                "parquet": parquet})
        return (with_(self.kafka_proxy_port, self.redis_proxy_port, self.s3_proxy_port),
                with_(self.kafka_port, self.redis_port, self.s3_port))


@dataclass
class Fault:
    """One fault: `inject()` starts it, `heal()` ends it, `duration_s` apart; `service` is the one
    the operator should be told about."""

    name: str
    service: str
    duration_s: float
    inject: Callable[[], None]
    heal: Callable[[], None]


def make_faults(services: NemesisServices, scale: float = 1.0) -> dict[str, Fault]:
    """Every fault, with the durations of the issue times `scale` (a short schedule for tests).
    A Kafka blackhole always outlasts the session timeout the caller configures (≥ 6 s)."""
    tp = services.toxiproxy

    def toxic(proxy: str, kind: str, streams=("downstream",), **attributes):
        names: list[str] = []
        def inject():
            names[:] = [tp.add_toxic(proxy, kind, stream, **attributes) for stream in streams]
        def heal():
            for name in names:
                tp.remove_toxic(proxy, name)
        return inject, heal

    def down(proxy: str):
        return (lambda: tp.set_enabled(proxy, False)), (lambda: tp.set_enabled(proxy, True))

    def frozen(pid: Callable[[], int]):
        return (lambda: os.kill(pid(), signal.SIGSTOP)), (lambda: os.kill(pid(), signal.SIGCONT))

    def disk_full(disk: Path):
        filler = disk / "filler"
        def inject():
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            try:
                for size in (1 << 20, 4096):  # megabytes while they fit, then pages
                    try:
                        while True:
                            os.write(fd, b"\0" * size)
                    except OSError:  # ENOSPC: full
                        pass
            finally:
                os.close(fd)
        return inject, (lambda: filler.unlink(missing_ok=True))

    def fault(name, service, duration, pair, at_least: float = 4.0):
        return name, Fault(name, service, max(duration * scale, at_least), *pair)

    both = ("upstream", "downstream")
    if services.lake == "s3":
        lake = [fault("s3 latency +1 s", "lake", 20, toxic("s3", "latency", latency=1000)),
                fault("s3 down", "lake", 20, down("s3")),
                fault("s3 slow close", "lake", 20, toxic("s3", "slow_close", delay=5000))]
    else:
        lake = [fault("lake disk full", "lake", 20, disk_full(services.small_disk))] if services.small_disk else []
    return dict([
        fault("redis latency +500 ms", "redis", 20, toxic("redis", "latency", latency=500)),
        fault("redis blackhole", "redis", 20, toxic("redis", "timeout", both, timeout=0)),
        fault("redis resets", "redis", 10, toxic("redis", "reset_peer", both, timeout=0)),
        fault("redis down", "redis", 20, down("redis")),
        fault("redis frozen", "redis", 10, frozen(services.redis_pid)),
        fault("kafka latency +500 ms", "kafka", 20, toxic("kafka", "latency", latency=500)),
        fault("kafka blackhole", "kafka", 40, at_least=10.0, pair=toxic("kafka", "timeout", both, timeout=0)),
        fault("kafka down", "kafka", 20, down("kafka")),
        fault("kafka frozen", "kafka", 10, frozen(services.kafka_pid)),
    ] + lake)
