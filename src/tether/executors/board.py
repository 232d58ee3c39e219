"""Live task contexts of one worker process, delivery of pause/cancel to them, and
hard termination of tasks that ignore a cancel."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tether import housekeeping, store
from tether.context import TaskContext
from tether.exceptions import CancelSignal, StopKind
from tether.states import Status
from tether.store import Job
from tether.transitions import Change

log = logging.getLogger(__name__)
STOP_FOR = {Status.PAUSING: StopKind.PAUSE, Status.CANCELLING: StopKind.CANCEL}
CLAIM_AHEAD_SECONDS = 0.05
HAND_BACK_AFTER = 1.0  # a claimed task not started this long goes back to the queue


class Pace:
    """Moving average of job durations, and from it how many jobs to claim ahead: about
    CLAIM_AHEAD_SECONDS of expected work. Short tasks are claimed in batches (one
    transaction for many), long ones one at a time, so a claimed task never waits long
    in ``running`` before it starts."""

    def __init__(self, prefetch: int = 32, horizon: float = CLAIM_AHEAD_SECONDS) -> None:
        self.prefetch = max(0, prefetch)
        self.horizon = horizon
        self.average: float | None = None
        self._lock = threading.Lock()

    def record(self, seconds: float) -> None:
        with self._lock:
            avg = self.average
            self.average = seconds if avg is None else 0.8 * avg + 0.2 * seconds

    def ahead(self) -> int:
        avg = self.average
        if avg is None:
            return 0
        return min(self.prefetch, int(self.horizon / max(avg, 1e-6)))

    def stall(self) -> None:
        """Claimed tasks waited too long (long tasks hold the threads): claim none
        ahead until short ones finish again."""
        with self._lock:
            self.average = max(self.average or 0.0, 2 * self.horizon)


def raise_in_thread(thread_id: int, exc: type[BaseException]) -> bool:
    """Raise ``exc`` asynchronously in another thread of this process. It arrives at
    the thread's next Python bytecode (not inside a blocking C call)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc)
    )
    if done > 1:  # "should never happen": undo
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)
    return done == 1


class ControlBoard:
    """Which tasks this process runs (or has claimed), so a pause or cancel reaches them
    at their next control point, or at their start when they have not started yet."""

    def __init__(self) -> None:
        self._contexts: dict[int, TaskContext] = {}
        self._threads: dict[int, int] = {}  # task id -> id of the thread running it
        self._cancelled_at: dict[int, float] = {}  # task id -> first cancel delivery
        self._terminated: dict[int, float] = {}  # task id -> when it was hard-terminated
        self._early_stops: dict[int, StopKind] = {}
        self._claimed: set[int] = set()
        self._waiting: dict[int, tuple[Job, float]] = {}  # claimed, not started yet
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.settle: Callable[[Job], object] | None = None
        """Set by the executor: runs a claimed job that got a pause/cancel before it
        started right away (in another thread), so the request is not kept waiting
        behind the task occupying the thread it was claimed for."""

    @property
    def running(self) -> list[int]:
        return list(self._contexts)

    def claimed(self, jobs: list[Job]) -> None:
        now = time.monotonic()
        with self._lock:
            for job in jobs:
                self._claimed.add(job.task_id)
                self._waiting[job.task_id] = (job, now)

    def take(self, job: Job) -> bool:
        """Whether the caller may start ``job``: it was claimed here and neither settled
        early nor handed back meanwhile. Exactly one caller gets True."""
        with self._lock:
            entry = self._waiting.get(job.task_id)
            if entry is None or entry[0] is not job:
                return False
            del self._waiting[job.task_id]
            return True

    def stale_waiting(self, max_wait: float = HAND_BACK_AFTER) -> list[Job]:
        """Take the claimed jobs that waited longer than ``max_wait`` to start (for
        the executor to hand back to the queue)."""
        limit = time.monotonic() - max_wait
        with self._lock:
            late = [job for job, at in self._waiting.values() if at < limit]
            for job in late:
                del self._waiting[job.task_id]
                self._claimed.discard(job.task_id)
                self._early_stops.pop(job.task_id, None)
        return late

    def holds(self, task_id: int) -> bool:
        """Whether this process has claimed (or runs) ``task_id``."""
        return task_id in self._claimed or task_id in self._contexts

    def held(self) -> list[int]:
        with self._lock:
            return list(self._claimed | set(self._contexts))

    def remember(self, task_id: int, ctx: TaskContext) -> None:
        """Called by the thread that is about to run the task."""
        with self._lock:
            self._contexts[task_id] = ctx
            self._threads[task_id] = threading.get_ident()
            kind = self._early_stops.pop(task_id, None)
        if kind:
            ctx.request_stop(kind)
        if self.stopping.is_set():  # a shutdown may have reached the others already
            ctx.request_stop(StopKind.SHUTDOWN)

    def forget(self, task_id: int) -> None:
        with self._lock:
            self._contexts.pop(task_id, None)
            self._threads.pop(task_id, None)
            self._cancelled_at.pop(task_id, None)
            self._terminated.pop(task_id, None)
            self._claimed.discard(task_id)
            self._waiting.pop(task_id, None)
            self._early_stops.pop(task_id, None)

    def deliver(self, task_id: int, kind: StopKind) -> None:
        """Stop a running task at its next control point, or a claimed one at its start."""
        early: Job | None = None
        with self._lock:
            ctx = self._contexts.get(task_id)
            if ctx is None and task_id in self._claimed:
                self._early_stops[task_id] = kind
                if self.settle is not None and task_id in self._waiting:
                    early = self._waiting.pop(task_id)[0]
            if ctx is not None and kind == StopKind.CANCEL:
                self._cancelled_at.setdefault(task_id, time.monotonic())
        if early is not None and self.settle is not None:
            self.settle(early)  # pause/roll back now, not after the task ahead of it
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
            ctx.request_stop(StopKind.SHUTDOWN)

    def poll_controls(self, worker: str) -> None:
        """Fallback for lost pushes: re-read stored requests for tasks this worker holds."""
        for task_id, status in store.pending_controls(worker).items():
            self.deliver(task_id, STOP_FOR[Status(status)])

    def overdue(self, grace: float, take_over: Callable[[int], object]) -> list[int]:
        """Hard-terminate tasks still running ``grace`` seconds after a cancel reached
        them: raise CancelSignal in their thread (the runner then rolls back as after a
        cooperative stop). A thread blocked in a C call does not see it; ``grace``
        seconds later ``take_over(task_id)`` is called to roll back from elsewhere
        (the stuck thread's writes are fenced by its run token)."""
        now = time.monotonic()
        acted: list[int] = []
        with self._lock:
            late = [
                (t, self._contexts.get(t), self._threads.get(t))
                for t, at in self._cancelled_at.items()
                if now - at >= grace
            ]
        for task_id, ctx, thread_id in late:
            if ctx is None or thread_id is None or ctx.rolling_back:
                continue  # stopped, or its rollback runs (a rollback is never cut short)
            if not ctx.in_task_code and task_id not in self._terminated:
                continue  # between the task function and the runner's bookkeeping
            first = self._terminated.setdefault(task_id, now)
            if first == now:
                log.warning("task %s ignored a cancel for %gs: terminating it", task_id, grace)
                ctx.terminated = True
                raise_in_thread(thread_id, CancelSignal)
                acted.append(task_id)
            elif now - first >= grace:
                log.warning(
                    "task %s is stuck outside Python code: rolling it back from another thread",
                    task_id,
                )
                self.forget(task_id)
                take_over(task_id)
                acted.append(task_id)
        return acted


def maintenance_round(
    worker: str, board: ControlBoard, lease: float, grace: float, take_over: Callable[[int], object]
) -> None:
    """Renew leases, honour stored control requests, terminate tasks that ignore a
    cancel, expire pauses, reap lost leases, run due housekeeping chores."""
    store.heartbeat(worker, board.held(), lease)
    board.poll_controls(worker)
    board.overdue(grace, take_over)
    store.expire_paused(actor=worker)
    store.release_lost(actor=worker)
    housekeeping.run_due()


def hand_back_waiting(board: ControlBoard, runner: Any, pace: Pace) -> int:
    """Give claimed jobs that found no free thread for HAND_BACK_AFTER seconds back to
    the queue (no attempt used), so they show ``queued`` and any free worker may take
    them; and claim none ahead until short tasks finish again."""
    late = board.stale_waiting()
    for job in late:
        runner.give_back(job, reason="handed back: no free worker thread")
    if late:
        pace.stall()
    return len(late)
