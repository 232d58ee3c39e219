"""Status events released in id order, so that a client that has seen event N has seen
every earlier one: resuming with ``since=N`` then loses nothing.

Ids are assigned when a transition inserts its event but become visible when its
transaction commits, which on PostgreSQL and MariaDB may be in another order (and a
rolled-back transaction leaves a hole for ever). An event above a hole waits; a hole
older than ``hold`` is looked up in the database (the event may have been lost on its
way here), and one older than ``give_up`` is skipped: its event, should it commit
after all, is still delivered live, only later than its successors.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from tether.transitions import Change

HOLD_SECONDS = 0.05
GIVE_UP_SECONDS = 0.5
REMEMBER_SKIPPED = 10_000


class Sequencer:
    def __init__(
        self, watermark: int, hold: float = HOLD_SECONDS, give_up: float = GIVE_UP_SECONDS
    ) -> None:
        self.watermark = watermark
        """Every event id up to here was released (or skipped)."""
        self.hold = hold
        self.give_up = give_up
        self._pending: dict[int, Change] = {}
        self._gap_since: float | None = None
        self._skipped: OrderedDict[int, None] = OrderedDict()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def waiting_tasks(self) -> set[int]:
        """Tasks with a status event waiting for a hole below it."""
        return {c.task_id for c in self._pending.values()}

    @property
    def newest(self) -> int:
        """The highest event id seen (released or waiting)."""
        return max(self._pending, default=self.watermark)

    def add(self, changes: Iterable[Change], now: float) -> list[Change]:
        """Take received changes; return those now releasable, in id order (and late
        ones that were skipped earlier, at once)."""
        out: list[Change] = []
        for c in changes:
            eid = c.event_id
            if eid is None:
                continue
            if eid <= self.watermark:
                if eid in self._skipped:  # committed after all: late, but not lost
                    del self._skipped[eid]
                    out.append(c)
                continue  # a duplicate (e.g. read from the database first)
            self._pending.setdefault(eid, c)
        return out + self._drain(now)

    def gap(self, now: float) -> tuple[int, int] | None:
        """The ids (exclusive bounds) missing below the first waiting event, once the
        hole is older than ``hold``: look them up and pass them to ``fill``."""
        if not self._pending or self._gap_since is None or now - self._gap_since < self.hold:
            return None
        return self.watermark, min(self._pending)

    def fill(self, found: Iterable[Change], now: float) -> list[Change]:
        """Take the events the database had for a gap; skip the rest of a hole that is
        older than ``give_up``."""
        out = self.add(found, now)
        if self._pending and self._gap_since is not None and now - self._gap_since >= self.give_up:
            low = min(self._pending)
            if low - self.watermark - 1 <= REMEMBER_SKIPPED:
                for eid in range(self.watermark + 1, low):
                    self._skipped[eid] = None
                while len(self._skipped) > REMEMBER_SKIPPED:
                    self._skipped.popitem(last=False)
            self.watermark = low - 1
            self._gap_since = None
            out += self._drain(now)
        return out

    def deadline(self, now: float) -> float | None:
        """Seconds until ``gap`` or ``fill`` has something to do (None: nothing waits)."""
        if self._gap_since is None:
            return None
        age = now - self._gap_since
        return max(0.0, (self.hold if age < self.hold else self.give_up) - age)

    def _drain(self, now: float) -> list[Change]:
        out: list[Change] = []
        pending = self._pending
        while self.watermark + 1 in pending:
            self.watermark += 1
            out.append(pending.pop(self.watermark))
        if not pending:
            self._gap_since = None
        elif out or self._gap_since is None:
            self._gap_since = now  # a new hole (or the old one moved on)
        return out
