"""Periodic housekeeping chores (sweeping leftovers, expiring files), run by every
worker's maintenance round. Chores must be idempotent and safe to run in several
processes at once; one that fails is logged and tried again at its next turn."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Chore:
    name: str
    func: Callable[[], object]
    every: float  # seconds
    due: float = 0.0  # time.monotonic() of its next run (0: at the first round)


_CHORES: dict[str, Chore] = {}
_lock = threading.Lock()


def chore(name: str, every: float) -> Callable[[Callable[[], object]], Callable[[], object]]:
    """Register ``func`` to run about every ``every`` seconds in each worker."""

    def register(func: Callable[[], object]) -> Callable[[], object]:
        _CHORES[name] = Chore(name, func, every)
        return func

    return register


def run_due(now: float | None = None) -> list[str]:
    """Run the chores that are due; returns their names."""
    now = time.monotonic() if now is None else now
    with _lock:
        due = [c for c in _CHORES.values() if c.due <= now]
        for c in due:
            c.due = now + c.every
    for c in due:
        try:
            c.func()
        except Exception:
            log.exception("housekeeping chore %s failed; it runs again in %gs", c.name, c.every)
    return [c.name for c in due]
