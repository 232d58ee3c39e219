"""The transition table exactly as DESIGN.md states it: every legal and illegal pair."""

from __future__ import annotations

import itertools

import pytest

from tether.states import FINAL, TRANSITIONS, Status, is_legal, sources

S = Status
LEGAL = {
    (S.QUEUED, S.RUNNING),
    (S.QUEUED, S.PAUSED),
    (S.QUEUED, S.CANCELLING),
    (S.RUNNING, S.QUEUED),
    (S.RUNNING, S.PAUSING),
    (S.RUNNING, S.CANCELLING),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.PAUSING, S.PAUSED),
    (S.PAUSING, S.CANCELLING),
    (S.PAUSING, S.SUCCEEDED),
    (S.PAUSING, S.FAILED),
    (S.PAUSED, S.QUEUED),
    (S.PAUSED, S.CANCELLING),
    (S.CANCELLING, S.CANCELLED),
    (S.CANCELLING, S.FAILED),
}
ALL_PAIRS = list(itertools.product(Status, Status))


def test_table_matches_design() -> None:
    assert set(TRANSITIONS) == LEGAL


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=lambda s: str(s))
def test_every_pair(src: Status, dst: Status) -> None:
    assert is_legal(src, dst) is ((src, dst) in LEGAL)
    assert is_legal(src.value, dst.value) is ((src, dst) in LEGAL)


@pytest.mark.parametrize("final", sorted(FINAL))
def test_final_statuses_never_change(final: Status) -> None:
    assert final.is_final
    assert not any(is_legal(final, dst) for dst in Status)


def test_sources() -> None:
    assert sources(S.PAUSED) == {S.QUEUED, S.PAUSING}
    assert sources(S.CANCELLED) == {S.CANCELLING}
    assert sources(S.QUEUED) == {S.RUNNING, S.PAUSED}


def test_unknown_status_is_rejected() -> None:
    with pytest.raises(ValueError):
        is_legal("queued", "exploded")
