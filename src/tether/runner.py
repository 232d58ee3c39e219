"""Run one claimed job to its next resting status. Shared by every executor.

The runner owns the task through its run token: every write it makes is fenced by
that token, so a worker that lost its lease can never overwrite a newer run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone

from tether import registry
from tether.context import TaskContext
from tether.exceptions import (
    CancelSignal,
    ControlSignal,
    LeaseLostSignal,
    PauseSignal,
    ShutdownSignal,
    TetherError,
)
from tether.models import Task
from tether.states import Status
from tether.store import DjangoStore, Job
from tether.transitions import RELEASE, transition

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0
MAX_ERROR_CHARS = 4000


class Runner:
    """Executes jobs. ``register``/``unregister`` let the executor reach live contexts."""

    def __init__(self, worker: str,
                 register: Callable[[int, TaskContext], None] = lambda i, c: None,
                 unregister: Callable[[int], None] = lambda i: None) -> None:
        self.worker = worker
        self.store = DjangoStore()
        self._register = register
        self._unregister = unregister

    def run(self, job: Job) -> None:
        ctx = TaskContext(task_id=job.task_id, token=job.token, store=self.store)
        self._register(job.task_id, ctx)
        try:
            task = Task.objects.filter(id=job.task_id, run_token=job.token).first()
            if task is None:
                return  # someone else owns it now
            ctx.state = dict(task.checkpoint or {})
            ctx.attempt = task.attempts
            if task.status == Status.CANCELLING:
                self._rollback(task, ctx)
            elif task.status == Status.PAUSING:
                self._pause(task, ctx)
            elif task.status == Status.RUNNING:
                self._execute(task, ctx)
        finally:
            self._unregister(job.task_id)

    def give_back(self, job: Job) -> None:
        """Return a claimed job that was never started (the executor is stopping)."""
        task = Task.objects.filter(id=job.task_id, run_token=job.token).first()
        if task is not None:
            ctx = TaskContext(task_id=job.task_id, token=job.token, store=self.store)
            self._requeue_for_shutdown(task, ctx)

    # -- outcomes -----------------------------------------------------------------
    def _execute(self, task: Task, ctx: TaskContext) -> None:
        try:
            ttype = registry.get_type(task.type)
            result = ttype.func(ctx, **task.params)
            ctx.flush()
        except (PauseSignal, CancelSignal):
            self._after_signal(task, ctx)
        except ShutdownSignal:
            self._requeue_for_shutdown(task, ctx)
        except LeaseLostSignal:
            log.warning("task %s: lease lost, stopping without writing", task.pk)
        except Exception as exc:  # the task failed; never let it take the worker down
            self._failed(task, ctx, exc)
        else:
            self._succeeded(task, ctx, result)

    def _current(self, task: Task) -> Status | None:
        status = Task.objects.filter(id=task.pk, run_token=task.run_token).values_list(
            "status", flat=True).first()
        return None if status is None else Status(status)

    def _after_signal(self, task: Task, ctx: TaskContext) -> None:
        status = self._current(task)
        if status == Status.CANCELLING:
            self._rollback(task, ctx)
        elif status == Status.PAUSING:
            self._pause(task, ctx)

    def _pause(self, task: Task, ctx: TaskContext) -> None:
        transition(task.pk, Status.PAUSED, actor=self.worker, reason="reached checkpoint",
                   token=task.run_token)

    def _succeeded(self, task: Task, ctx: TaskContext, result: Any) -> None:
        progress = ctx.progress_snapshot()
        if progress["total"] and progress["done"] < progress["total"]:
            progress.update(done=progress["total"], percent=100.0, eta_seconds=0)
        moved = transition([task.pk], Status.SUCCEEDED, actor=self.worker, reason="returned",
                           token=task.run_token,
                           updates={"result": _jsonable(result), "progress": progress})
        if not moved and self._current(task) == Status.CANCELLING:
            self._rollback(task, ctx)  # cancelled after the function returned: undo it

    def _failed(self, task: Task, ctx: TaskContext, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        log.info("task %s failed: %s\n%s", task.pk, message, traceback.format_exc())
        status = self._current(task)
        if status == Status.CANCELLING:
            self._rollback(task, ctx)
            return
        retry = status == Status.RUNNING and task.attempts < task.max_attempts
        if retry and not isinstance(exc, TetherError):
            backoff = _backoff(task)
            transition([task.pk], Status.QUEUED, actor=self.worker, token=task.run_token,
                       reason=f"retry in {backoff:g}s after {message}",
                       updates={"attempts": F("attempts") + 1, "error": message,
                                "run_after": timezone.now() + timedelta(seconds=backoff)})
        else:
            transition([task.pk], Status.FAILED, actor=self.worker, reason=message,
                       token=task.run_token, updates={"error": message})

    def _requeue_for_shutdown(self, task: Task, ctx: TaskContext) -> None:
        status = self._current(task)
        if status == Status.RUNNING:
            transition([task.pk], Status.QUEUED, actor=self.worker, reason="server shutdown",
                       token=task.run_token)
        elif status == Status.PAUSING:
            self._pause(task, ctx)
        elif status == Status.CANCELLING:
            Task.objects.filter(id=task.pk, run_token=task.run_token).update(**RELEASE)

    def _rollback(self, task: Task, ctx: TaskContext) -> None:
        ctx.clear_stop()  # rollback code may report progress freely
        try:
            ttype = registry.get_type(task.type)
            if ttype.rollback is not None:
                ttype.rollback(ctx)
        except ShutdownSignal:
            Task.objects.filter(id=task.pk, run_token=task.run_token).update(**RELEASE)
            return  # the next start resumes the rollback
        except ControlSignal:
            return  # lease lost: the new owner rolls back
        except Exception as exc:
            message = f"rollback failed: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            log.exception("task %s: %s", task.pk, message)
            transition([task.pk], Status.FAILED, actor=self.worker, reason=message,
                       token=task.run_token, updates={"error": message})
            return
        transition([task.pk], Status.CANCELLED, actor=self.worker, reason="rollback done",
                   token=task.run_token)


def _backoff(task: Task) -> float:
    base = 1.0
    with contextlib.suppress(TetherError):
        base = registry.get_type(task.type).retry_backoff
    return float(min(base * 2 ** (task.attempts - 1), MAX_BACKOFF))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)
