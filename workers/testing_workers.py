"""EmbeddingWorker subclasses for fault tests: importable by every Ray worker process (a class of
a test module may not be), so tests hand them to `StreamSupervisor(worker_class=…)`."""

from __future__ import annotations

import time

from workers.worker import EmbeddingWorker


class SlowSetupWorker(EmbeddingWorker):
    """setup() takes `setup_delay_s` longer, as a large model's load does: the window in which a
    test kills the replica's process."""

    setup_delay_s = 8.0

    def setup(self) -> None:
        time.sleep(self.setup_delay_s)
        super().setup()
