from __future__ import annotations

import pytest

from tether.progress import RateWindow, snapshot


def test_rate_over_window() -> None:
    w = RateWindow(window=10)
    assert w.add(0.0, 0) is None
    assert w.add(1.0, 100) == pytest.approx(100)
    assert w.add(2.0, 300) == pytest.approx(150)


def test_rate_forgets_old_samples() -> None:
    w = RateWindow(window=2)
    w.add(0.0, 0)
    w.add(1.0, 1000)  # a fast start
    for t in range(2, 12):
        rate = w.add(float(t), 1000 + (t - 1) * 10)
    assert rate == pytest.approx(10)


def test_rate_restarts_when_progress_goes_back() -> None:
    w = RateWindow()
    w.add(0.0, 50)
    w.add(1.0, 60)
    assert w.add(2.0, 5) is None


def test_snapshot_percent_and_eta() -> None:
    s = snapshot(25, 100, "rows", "hi", 5.0)
    assert s == {
        "done": 25,
        "total": 100,
        "unit": "rows",
        "percent": 25.0,
        "rate": 5.0,
        "eta_seconds": 15.0,
        "message": "hi",
    }


def test_snapshot_without_total_or_rate() -> None:
    s = snapshot(3, None, None, None, None)
    assert s["percent"] is None and s["eta_seconds"] is None
    assert snapshot(150, 100, None, None, 0.0)["percent"] == 100.0
