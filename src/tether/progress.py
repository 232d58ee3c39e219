"""Progress figures: percent, rate over a recent window, ETA (pure Python)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

RATE_WINDOW_SECONDS = 10.0


class RateWindow:
    """Keeps (time, done) samples of the last ``window`` seconds to compute a rate."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def reset(self) -> None:
        self._samples.clear()

    def add(self, at: float, done: float) -> float | None:
        """Record a sample; return units per second over the window (None if unknown)."""
        samples = self._samples
        if samples and done < samples[-1][1]:
            samples.clear()  # progress went backwards (a new phase): start over
        samples.append((at, done))
        while len(samples) > 2 and at - samples[1][0] >= self.window:
            samples.popleft()
        first_at, first_done = samples[0]
        if at - first_at <= 0:
            return None
        return (done - first_done) / (at - first_at)


def snapshot(
    done: float,
    total: float | None,
    unit: str | None,
    message: str | None,
    rate: float | None,
) -> dict[str, Any]:
    """The progress document stored on the task and shown by the API."""
    percent = None
    eta = None
    if rate is not None and not math.isfinite(rate):
        rate = None  # figures near the float limit: JSON has no infinity
    if total:
        percent = round(min(max(done / total, 0.0), 1.0) * 100, 2)
        if rate and rate > 0:
            eta = round(max(total - done, 0) / rate, 2)
            eta = eta if math.isfinite(eta) else None
    return {
        "done": done,
        "total": total,
        "unit": unit,
        "percent": percent,
        "rate": round(rate, 3) if rate is not None else None,
        "eta_seconds": eta,
        "message": message,
    }
