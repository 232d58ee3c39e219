"""Housekeeping chores: run when due, a failing one does not stop the others."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether import housekeeping


@pytest.fixture(autouse=True)
def _own_chores(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(housekeeping, "_CHORES", {})
    yield


def test_chores_run_when_due_and_failures_are_contained() -> None:
    ran: list[str] = []

    @housekeeping.chore("fails", every=10)
    def fails() -> None:
        ran.append("fails")
        raise RuntimeError("disk full")

    @housekeeping.chore("often", every=1)
    def often() -> None:
        ran.append("often")

    assert housekeeping.run_due(now=100.0) == ["fails", "often"]
    assert ran == ["fails", "often"]
    assert housekeeping.run_due(now=100.5) == []
    assert housekeeping.run_due(now=101.0) == ["often"]
    assert housekeeping.run_due(now=110.0) == ["fails", "often"]
