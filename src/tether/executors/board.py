"""Live task contexts of one worker process, and delivery of pause/cancel to them."""

from __future__ import annotations

import threading

from tether import store
from tether.context import TaskContext
from tether.states import Status
from tether.transitions import Change

STOP_FOR = {Status.PAUSING: "pause", Status.CANCELLING: "cancel"}


class ControlBoard:
    """Which tasks this process runs (or has claimed), so a pause or cancel reaches them
    at their next control point, or at their start when they have not started yet."""

    def __init__(self) -> None:
        self._contexts: dict[int, TaskContext] = {}
        self._early_stops: dict[int, str] = {}
        self._claimed: set[int] = set()
        self._lock = threading.Lock()
        self.stopping = threading.Event()

    @property
    def running(self) -> list[int]:
        return list(self._contexts)

    def claimed(self, task_ids: list[int]) -> None:
        with self._lock:
            self._claimed.update(task_ids)

    def remember(self, task_id: int, ctx: TaskContext) -> None:
        with self._lock:
            self._contexts[task_id] = ctx
            kind = self._early_stops.pop(task_id, None)
        if kind:
            ctx.request_stop(kind)
        if self.stopping.is_set():  # a shutdown may have reached the others already
            ctx.request_stop("shutdown")

    def forget(self, task_id: int) -> None:
        with self._lock:
            self._contexts.pop(task_id, None)
            self._claimed.discard(task_id)
            self._early_stops.pop(task_id, None)

    def deliver(self, task_id: int, kind: str) -> None:
        """Stop a running task at its next control point, or a claimed one at its start."""
        with self._lock:
            ctx = self._contexts.get(task_id)
            if ctx is None and task_id in self._claimed:
                self._early_stops[task_id] = kind
        if ctx is not None and ctx.stop_requested is None:
            ctx.request_stop(kind)

    def on_change(self, changes: list[Change]) -> None:
        """Transition listener: push in-process pause/cancel requests."""
        for change in changes:
            kind = STOP_FOR.get(change.dst)
            if kind:
                self.deliver(change.task_id, kind)

    def shutdown(self) -> None:
        self.stopping.set()
        for ctx in list(self._contexts.values()):
            ctx.request_stop("shutdown")

    def poll_controls(self, worker: str) -> None:
        """Fallback for lost pushes: re-read stored requests for tasks this worker holds."""
        for task_id, status in store.pending_controls(worker).items():
            self.deliver(task_id, STOP_FOR[Status(status)])


def maintenance_round(worker: str, board: ControlBoard, lease: float) -> None:
    """Renew leases, honour stored control requests, expire pauses, reap lost leases."""
    store.heartbeat(worker, lease)
    board.poll_controls(worker)
    store.expire_paused(actor=worker)
    store.release_lost(actor=worker)
