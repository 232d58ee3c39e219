"""TaskContext: what task code gets as ``ctx`` (state, checkpoint, atomic, progress)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from tether import strictjson
from tether.exceptions import SIGNALS, LeaseLostSignal, StopKind
from tether.progress import RateWindow, snapshot

FLUSH_INTERVAL = 0.2
KEEP_WORK_ON = frozenset(k for k in StopKind if k.keeps_work)  # the task continues after them


class ContextStore(Protocol):
    """Where a context writes; the Django implementation lives in ``tether.store``."""

    def save(
        self,
        task_id: int,
        token: str,
        *,
        progress: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> bool:
        """Write progress and/or checkpoint if ``token`` still owns the task."""
        ...

    def atomic(self) -> Any:
        """A context manager around one database transaction."""
        ...


class TaskContext:
    """Handed to task code. Calls to ``progress``, ``checkpoint`` and ``atomic`` are
    control points: a pending pause or cancel raises a ControlSignal there."""

    def __init__(
        self,
        *,
        task_id: int,
        token: str,
        store: ContextStore,
        state: dict[str, Any] | None = None,
        attempt: int = 1,
        flush_interval: float = FLUSH_INTERVAL,
        input: Any = None,
        owner_id: int | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.input = input
        """A pipeline step's input: the previous step's result (a list of results after
        a parallel group), or the pipeline's ``data_url`` for the first step; None for
        a task that is not a pipeline step."""
        self.owner_id = owner_id
        """The id of the user who submitted the task (for per-user files and tables)."""
        self.state: dict[str, Any] = dict(state or {})
        self._token = token
        self._store = store
        self._flush_interval = flush_interval
        self._stop: StopKind | None = None
        self._rolling_back = False
        self.in_task_code = False  # set by the runner while the task function runs
        self.terminated = False  # set when a CancelSignal was forced into its thread
        self._done: float = 0
        self._total: float | None = None
        self._unit: str | None = None
        self._message: str | None = None
        self._progress_dirty = False
        self._progress_seen = False
        self._state_dirty = False
        self._next_flush = 0.0
        self._rate = RateWindow()

    # -- control ---------------------------------------------------------------
    def request_stop(self, kind: StopKind | str) -> None:
        """Ask the task to stop at its next control point (called by executors). A
        string must be a StopKind's value (ValueError otherwise)."""
        kind = StopKind(kind)
        if self._rolling_back and kind.requested:
            return  # a rollback is already the answer to the cancel
        if self._stop != StopKind.LEASE_LOST:
            self._stop = kind

    def begin_rollback(self) -> None:
        """From now on only a shutdown or a lost lease stops this context: rollback code
        may report progress freely while the task stays ``cancelling``."""
        self._rolling_back = True
        if self._stop is not None and self._stop.requested:
            self._stop = None

    @property
    def rolling_back(self) -> bool:
        return self._rolling_back

    @property
    def stop_requested(self) -> StopKind | None:
        return self._stop

    def should_stop(self) -> bool:
        """True when a pause or cancel is pending; the next control point will raise."""
        return self._stop is not None

    def _raise_stop(self) -> None:
        kind = self._stop
        assert kind is not None
        if kind == StopKind.SHUTDOWN:
            self.flush()
        elif kind != StopKind.LEASE_LOST:  # raised here, in task code, the task fails
            self._check_pending()
        # a pause or cancel leaves pending writes to the runner, which writes them with
        # the next status change (one transaction: see pending_writes), or before the
        # rollback runs
        raise SIGNALS[kind]()

    def pending_writes(self) -> dict[str, Any]:
        """Progress and checkpoint not written yet, as column values."""
        values: dict[str, Any] = {}
        if self._progress_dirty:
            values["progress"] = self.progress_snapshot()
        if self._state_dirty:
            values["checkpoint"] = dict(self.state)
        # checked in task code before a stop (see _raise_stop); a value that fails now
        # was changed after that: the last stored one stays
        return {k: v for k, v in values.items() if strictjson.problem(v) is None}

    def _check_pending(self) -> None:
        """Raise ResultNotJSON if the pending progress or checkpoint cannot be stored."""
        if self._progress_dirty:
            strictjson.check(self.progress_snapshot(), "progress")
        if self._state_dirty:
            strictjson.check(self.state, "checkpoint")

    # -- progress ----------------------------------------------------------------
    def progress(
        self,
        done: float,
        total: float | None = None,
        unit: str | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress. Cheap: writes are coalesced to one per flush interval."""
        self._done = done
        if total is not None:
            self._total = total
        if unit is not None:
            self._unit = unit
        if message is not None:
            self._message = message
        self._progress_dirty = self._progress_seen = True
        if self._stop is not None:
            self._raise_stop()
        if time.monotonic() >= self._next_flush:
            self.flush()

    def checkpoint(self, state: dict[str, Any], *, sync: bool = True) -> None:
        """Save ``state``; a later run (after pause, crash or redelivery) starts from it.

        ``sync=True`` writes it now. ``sync=False`` coalesces it with progress writes
        (at most one per flush interval) and always writes it before the task pauses,
        is cancelled or ends; a crash may lose up to one interval of it.
        """
        self.state = dict(state)
        self._state_dirty = True
        if sync:
            self.flush()
        if self._stop is not None:
            self._raise_stop()
        if not sync and time.monotonic() >= self._next_flush:
            self.flush()

    @contextmanager
    def atomic(self, state: dict[str, Any], *, keep_work: bool = False) -> Iterator[None]:
        """Database writes in the block commit in one transaction with ``state`` as the
        new checkpoint: after pause, crash or redelivery nothing is lost or done twice.

        ``keep_work``: the block also runs when a pause or shutdown is pending, to save
        work done before it arrived (the stop is raised once the block has committed)."""
        if self._stop is not None and not (keep_work and self._stop in KEEP_WORK_ON):
            self._raise_stop()
        with self._store.atomic():
            yield
            self._write(checkpoint=dict(state))
        self.state = dict(state)
        self._state_dirty = False
        if self._stop is not None:
            self._raise_stop()

    @property
    def reported_progress(self) -> bool:
        """Whether task code has reported any progress (or a flush is pending)."""
        return self._progress_seen

    # -- writing -------------------------------------------------------------------
    def progress_snapshot(self) -> dict[str, Any]:
        rate = self._rate.add(time.monotonic(), self._done)
        return snapshot(self._done, self._total, self._unit, self._message, rate)

    def flush(self) -> None:
        """Write pending progress and checkpoint now."""
        self._next_flush = time.monotonic() + self._flush_interval
        if not (self._progress_dirty or self._state_dirty):
            return
        self._write(checkpoint=dict(self.state) if self._state_dirty else None)

    def _write(self, *, checkpoint: dict[str, Any] | None) -> None:
        # checked here, in task code: a value the database refuses fails this task only
        progress = self.progress_snapshot() if self._progress_dirty else None
        if progress is not None:
            strictjson.check(progress, "progress")
        if checkpoint is not None:
            strictjson.check(checkpoint, "checkpoint")
        if not self._store.save(
            self.task_id, self._token, progress=progress, checkpoint=checkpoint
        ):
            self._stop = StopKind.LEASE_LOST
            raise LeaseLostSignal()
        self._progress_dirty = False
        if checkpoint is not None:
            self._state_dirty = False
