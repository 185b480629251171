"""Fault injection helpers: streams of documents, final-state checks, services of our own."""

from __future__ import annotations

import contextlib
import random
import threading
from pathlib import Path

import pytest

from tests.helpers import (
    all_committed,
    committed_offsets,
    create_topic,
    doc,
    end_offsets,
    header,
    make_settings,
    produce,
    read_dlq,
    read_parquet,
    service,
    wait_until,
)
from tests.hostile import bad_records
from workers.sinks.vector_sets import VectorSetIndex

REPO = Path(__file__).resolve().parents[2]
WORDS = ["속보", "정부", "발표", "금리", "반도체", "수출", "날씨", "태풍", "야구", "선거", "breaking", "market", "rates", "storm", "chip", "election"]


class Stream:
    """A topic of valid documents with bad records mixed in, and the checks of the final state."""

    def __init__(self, settings, n_valid: int, n_bad: int = 12, seed: int = 0, partitions: int = 3):
        self.settings = settings
        rng = random.Random(seed)
        self.valid = {f"v{seed}-{i:05d}": " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 60)))
                      for i in range(n_valid)}
        bad = [b for b in bad_records(near_broker_max=300_000) if b[0] not in ("deeply-nested-json",)]
        self.bad = bad[:n_bad]
        self.records = [doc(i, t) for i, t in self.valid.items()]
        step = max(1, len(self.records) // max(1, n_bad))
        for j, (_, key, value, _) in enumerate(self.bad):
            self.records.insert(j * step + 1, (key, value))
        create_topic(settings, partitions=partitions)
        self.sent = 0

    def send(self, count: int | None = None) -> None:
        part = self.records[self.sent:self.sent + count if count else None]
        produce(self.settings, part)
        self.sent += len(part)

    def committed(self) -> int:
        return sum(committed_offsets(self.settings).values())

    def check(self, redis_client, index: str = "tiny-bert") -> None:
        """Every valid id in Redis exactly once, every valid record in Parquet exactly once per
        (partition, offset), the DLQ complete, the committed offsets at the end."""
        s = self.settings
        assert self.sent == len(self.records), "the test sent the whole stream"
        assert all_committed(s), f"committed {committed_offsets(s)} != end {end_offsets(s)}"
        assert committed_offsets(s) == end_offsets(s)
        vindex = VectorSetIndex.stored(redis_client, s.redis, index)  # the layout the sink recorded
        pipe = redis_client.pipeline(transaction=False)
        for i in self.valid:
            pipe.execute_command("VISMEMBER", vindex.key_for(i), i)
        missing = [i for i, present in zip(self.valid, pipe.execute()) if not present]
        assert not missing, f"{len(missing)} valid ids missing from Redis, e.g. {missing[:5]}"
        assert sum(redis_client.execute_command("VCARD", k) for k in vindex.shard_keys()) == len(self.valid)
        table = read_parquet(s)
        pairs = list(zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist()))
        assert len(pairs) == len(set(pairs)) == len(self.valid), "each valid record exactly once in Parquet"
        assert set(table["id"].to_pylist()) == set(self.valid)
        dlq = read_dlq(s, expected=len(self.bad))
        codes = {r.key: header(r, "embedworker.error.code") for r in dlq}
        assert codes == {key: code for _, key, _, code in self.bad}, "the DLQ is complete, with the right reasons"


@pytest.fixture
def stream_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique):
    def build(**overrides):
        return make_settings(kafka_bootstrap, redis_url, tiny_model_dir, tmp_path, unique, **overrides)
    return build


@contextlib.contextmanager
def supervising(supervisor):
    """The supervisor's loop in a thread for the block; then it stops and drains, and what the
    loop raised fails the test."""
    thread, box = run_in_thread(lambda: supervisor.supervise(poll_s=0.2))
    try:
        yield
    finally:
        supervisor.request_stop()
        thread.join(120)
    assert "error" not in box, box.get("error")


def wait_all_committed(settings, supervisor, timeout: float = 180) -> None:
    wait_until(lambda: all_committed(settings), timeout=timeout, message="everything committed",
               diagnose=lambda: f"committed {committed_offsets(settings)}, stats {supervisor.stats()}")


def run_in_thread(target) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def run():
        try:
            box["result"] = target()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


__all__ = ["Stream", "run_in_thread", "service", "wait_until"]
