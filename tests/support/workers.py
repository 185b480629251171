"""EmbeddingWorker subclasses for fault tests: importable by every Ray worker process (a class of
a test module may not be), so tests hand them to `StreamSupervisor(worker_class=…)`."""

from __future__ import annotations

import time

from workers.stream.worker import EmbeddingWorker


class SlowSetupWorker(EmbeddingWorker):
    """setup() takes `setup_delay_s` longer, as a large model's load does: the window in which a
    test kills the replica's process."""

    setup_delay_s = 8.0

    def setup(self) -> None:
        time.sleep(self.setup_delay_s)
        super().setup()


class PacedWorker(EmbeddingWorker):
    """Its encoder takes `seconds_per_text` per text (sleeping, not computing), as a GPU at full
    load does: one replica's rate is fixed (50 texts/s) whatever the machine, so autoscaling tests
    and bench/elastic.py see a backlog one replica drains slowly and three about three times
    faster, even on 2 cores."""

    seconds_per_text = 0.02

    def setup(self) -> None:
        super().setup()
        launch = self.encoder.launch

        def paced(ids, padded_len):
            time.sleep(self.seconds_per_text * len(ids))
            return launch(ids, padded_len)

        self.encoder.launch = paced  # type: ignore[method-assign]
