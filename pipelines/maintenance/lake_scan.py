"""An index's newest records read from the lake in bounded memory: `restore` and the lake as a
backfill input go through every document of an index, which may be far larger than the driver.

Two passes over the same scan (the table's files in log order, batches in file order):
1. the key columns only (id, source topic, partition and offset, ingestion time, op, model;
   tens of bytes a row) pick each id's newest record: the row positions of its rows;
2. the columns asked for, batch by batch (`BATCH_ROWS`), keeping the rows at those positions.
What is held at once is the keys of the index and one batch, never its vectors or texts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

KEYS = ["id", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at", "op", "model"]
BATCH_ROWS = 4096


def newest_positions(keys: pa.Table) -> np.ndarray:
    """Positions (sorted) of the rows of each id's newest record (all its chunks). Within one
    source partition the offset orders the records (an id's records of a stream share its
    partition; a deletion can be stored before the upsert it follows, so ingestion times do
    not); between sources (a backfill and the stream) the later ingestion wins."""
    keys = keys.select(["id", "kafka_topic", "kafka_partition", "kafka_offset", "ingested_at"]).append_column(
        "_row", pa.array(np.arange(keys.num_rows)))
    source = ["id", "kafka_topic", "kafka_partition"]
    latest = keys.group_by(source).aggregate([("kafka_offset", "max")]).rename_columns(source + ["kafka_offset"])
    candidates = keys.join(latest, keys=source + ["kafka_offset"], join_type="inner")
    ordered = candidates.sort_by([("ingested_at", "ascending"), ("kafka_offset", "ascending")])
    last = ordered.group_by("id", use_threads=False).aggregate([("kafka_topic", "last"), ("kafka_partition", "last"),
                                                                ("kafka_offset", "last")])
    winners = candidates.join(last, keys=["id"], join_type="inner")
    keep = winners.filter(pc.and_(pc.and_(pc.equal(winners["kafka_topic"], winners["kafka_topic_last"]),
                                          pc.equal(winners["kafka_partition"], winners["kafka_partition_last"])),
                                  pc.equal(winners["kafka_offset"], winners["kafka_offset_last"])))["_row"]
    return np.sort(keep.to_numpy())


@dataclass
class NewestScan:
    """The newest records of one index: `keys` (their key columns, for counts and checks before
    writing) and `batches()` (their columns, a batch at a time, in scan order)."""

    dataset: ds.Dataset
    condition: ds.Expression
    positions: np.ndarray
    keys: pa.Table
    rows_in_lake: int

    def batches(self, columns: list[str]) -> Iterator[pa.Table]:
        start = 0
        for batch in self.dataset.to_batches(columns=columns, filter=self.condition, batch_size=BATCH_ROWS):
            lo, hi = np.searchsorted(self.positions, [start, start + batch.num_rows])
            if hi > lo:
                yield pa.Table.from_batches([batch]).take(pa.array(self.positions[lo:hi] - start))
            start += batch.num_rows


def scan_newest(dataset: ds.Dataset, index: str) -> NewestScan:
    """Pass 1 over `index` in `dataset`: its key columns, and where its newest records are."""
    condition = ds.field("index") == index
    parts = list(dataset.to_batches(columns=KEYS, filter=condition, batch_size=BATCH_ROWS * 16))
    keys = pa.Table.from_batches(parts) if parts else pa.schema([dataset.schema.field(n) for n in KEYS]).empty_table()
    positions = newest_positions(keys)
    return NewestScan(dataset, condition, positions, keys.take(pa.array(positions)), keys.num_rows)
