"""OffsetLedger: sinks get records in offset order; commits never pass an unfinished record."""

from workers.stream.ledger import DELETE, DOC, REJECT, OffsetLedger

TP = ("news", 0)


def test_release_stops_at_the_first_record_still_encoding_and_skips_rejects():
    ledger = OffsetLedger()
    for offset, kind in enumerate([DOC, REJECT, DOC, DELETE]):
        ledger.add(TP, offset, kind, payload="del" if kind == DELETE else None)
    ledger.fill(TP, 2, "v2")
    assert ledger.take_ready() == []              # offset 0 is still being encoded
    ledger.fill(TP, 0, "v0")
    assert ledger.take_ready() == [(TP, 0, "v0"), (TP, 2, "v2"), (TP, 3, "del")]
    assert ledger.unreleased() == 0


def test_commit_waits_for_durability_and_dlq_acks():
    ledger = OffsetLedger()
    for offset, kind in enumerate([DOC, REJECT, DOC]):
        ledger.add(TP, offset, kind)
    ledger.fill(TP, 0, "a")
    ledger.fill(TP, 2, "b")
    ledger.take_ready()
    assert ledger.committable() == {}
    ledger.mark_durable({TP: 0})
    assert ledger.committable() == {TP: 1}        # offset 1 (the reject) not acknowledged yet
    ledger.ack_reject(TP, 1)
    assert ledger.committable() == {TP: 2}        # offset 2 not durable yet
    ledger.mark_durable({TP: 2})
    assert ledger.committable() == {TP: 3}
    assert ledger.pending() == 0 and ledger.committable() == {}


def test_trailing_rejects_commit_once_acknowledged():
    ledger = OffsetLedger()
    ledger.add(TP, 10, REJECT)
    ledger.add(TP, 11, REJECT)
    ledger.ack_reject(TP, 11)
    assert ledger.committable() == {}
    ledger.ack_reject(TP, 10)
    assert ledger.committable() == {TP: 12}


def test_partitions_are_independent_and_can_be_dropped():
    ledger = OffsetLedger()
    other = ("news", 1)
    ledger.add(TP, 0, DOC)
    ledger.add(other, 5, DOC)
    ledger.fill(other, 5, "x")
    assert ledger.take_ready() == [(other, 5, "x")]
    ledger.mark_durable({other: 5})
    assert ledger.committable() == {other: 6}
    assert ledger.unreleased_in([TP]) == 1
    ledger.drop([TP])
    ledger.fill(TP, 0, "late")                    # an encode finishing after the revocation
    assert ledger.take_ready() == [] and ledger.unreleased() == 0 and ledger.partitions() == [other]


def test_redelivered_offsets_are_not_tracked_twice():
    ledger = OffsetLedger()
    ledger.add(TP, 3, DOC)
    ledger.add(TP, 3, DOC)
    ledger.add(TP, 2, DOC)
    assert ledger.pending() == 1


def test_a_rejection_acknowledged_before_the_sinks_pass_it_does_not_shift_the_release():
    """Found by the simulation (seed 181): a rejected record at the head of a partition,
    acknowledged by the DLQ while the sink thread was waiting out a retry (so it had not yet
    skipped it), was popped by the commit and moved the release point one slot back: the
    next release handed the sinks an already released record (payload None) and skipped
    another."""
    ledger = OffsetLedger()
    tp = ("t", 0)
    ledger.add(tp, 0, REJECT)
    ledger.add(tp, 1, DOC)
    ledger.add(tp, 2, DOC)
    ledger.ack_reject(tp, 0)
    assert ledger.committable() == {tp: 1}  # before any take_ready: the rejection alone is done
    ledger.fill(tp, 1, ["r1"])
    ledger.fill(tp, 2, ["r2"])
    assert ledger.take_ready() == [(tp, 1, ["r1"]), (tp, 2, ["r2"])]
    assert ledger.unreleased() == 0
    ledger.mark_durable({tp: 2})
    assert ledger.committable() == {tp: 3}
