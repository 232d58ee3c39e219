"""Status events leave the sequencer in id order, whatever order they commit in."""

from __future__ import annotations

from tether.events.sequencer import Sequencer
from tether.states import Status
from tether.transitions import Change


def ev(eid: int) -> Change:
    return Change(1, Status.QUEUED, Status.RUNNING, "", eid)


def ids(changes: list[Change]) -> list[int | None]:
    return [c.event_id for c in changes]


def test_in_order_events_pass_at_once() -> None:
    seq = Sequencer(10)
    assert ids(seq.add([ev(11), ev(12)], now=0.0)) == [11, 12]
    assert seq.watermark == 12
    assert seq.gap(now=5.0) is None


def test_an_event_above_a_hole_waits_until_the_hole_fills() -> None:
    seq = Sequencer(10)
    assert seq.add([ev(12), ev(13)], now=0.0) == []
    assert ids(seq.add([ev(11)], now=0.01)) == [11, 12, 13]


def test_duplicates_are_dropped() -> None:
    seq = Sequencer(10)
    assert ids(seq.add([ev(11), ev(11)], now=0.0)) == [11]
    assert seq.add([ev(11), ev(9)], now=0.1) == []


def test_a_hole_is_looked_up_after_the_hold_and_filled_from_the_database() -> None:
    seq = Sequencer(10, hold=0.05, give_up=0.5)
    seq.add([ev(13)], now=0.0)
    assert seq.gap(now=0.01) is None  # still within the hold
    assert seq.gap(now=0.06) == (10, 13)  # look up 11 and 12
    assert ids(seq.fill([ev(11), ev(12)], now=0.06)) == [11, 12, 13]


def test_a_hole_never_filled_is_skipped_and_its_late_event_still_delivered() -> None:
    seq = Sequencer(10, hold=0.05, give_up=0.5)
    seq.add([ev(12)], now=0.0)
    assert seq.fill([], now=0.1) == []  # not yet given up
    assert ids(seq.fill([], now=0.6)) == [12]
    assert seq.watermark == 12
    assert ids(seq.add([ev(11)], now=1.0)) == [11]  # committed late: not lost
    assert seq.add([ev(11)], now=1.1) == []  # but only once


def test_deadline_says_when_the_hole_needs_attention() -> None:
    seq = Sequencer(0, hold=0.05, give_up=0.5)
    assert seq.deadline(now=0.0) is None
    seq.add([ev(2)], now=0.0)
    assert seq.deadline(now=0.0) == 0.05
    assert abs((seq.deadline(now=0.1) or 0) - 0.4) < 1e-9


def test_a_partly_filled_hole_keeps_waiting_for_the_rest() -> None:
    seq = Sequencer(10, hold=0.05, give_up=0.5)
    seq.add([ev(14)], now=0.0)
    assert ids(seq.fill([ev(11)], now=0.06)) == [11]
    assert seq.watermark == 11
    assert ids(seq.add([ev(12), ev(13)], now=0.07)) == [12, 13, 14]
