"""The real EmbeddingWorker with its parts swapped for the in-memory ones of tests/support: the
only subclass the simulation needs. Nothing of the worker's own logic is replaced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.support.fake_encoder import FakeEncoder
from tests.support.fake_kafka import FakeDeadLetters, FakeSource
from tests.support.fake_sinks import FakeVectorSink, SimLakeSink
from workers.stream.worker import EmbeddingWorker

if TYPE_CHECKING:
    from tests.simulation.sim import Simulation


class SimWorker(EmbeddingWorker):
    configure_logging = False
    encoder: FakeEncoder  # type: ignore[assignment]
    dlq: FakeDeadLetters  # type: ignore[assignment]
    source: FakeSource  # type: ignore[assignment]

    def __init__(self, sim: Simulation, replica: int, **settings):
        super().__init__(**settings, replica=replica)
        self.sim = sim
        self.clock = sim.clock

    def _load_encoder(self) -> FakeEncoder:  # type: ignore[override]
        return FakeEncoder(self.sim.seconds_per_token)

    def _open_sinks(self) -> list:
        now, p = self.sim.clock.monotonic, self.parquet_settings
        self.lake = SimLakeSink(self.sim.lake, self.replica, now, p.max_rows_per_file, p.max_seconds)
        return [FakeVectorSink(self.sim.redis, self.replica, now), self.lake]

    def _open_dead_letters(self) -> FakeDeadLetters:  # type: ignore[override]
        return FakeDeadLetters(self.sim.kafka)

    def _open_source(self) -> FakeSource:  # type: ignore[override]
        return FakeSource(self.sim.kafka, self.replica)

    def _release_memory(self) -> None:
        pass  # no model: nothing to collect
