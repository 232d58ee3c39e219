"""Run one claimed job to its next resting status. Shared by every executor.

The runner owns the task through its run token: every write it makes is fenced by
that token, so a worker that lost its lease can never overwrite a newer run.
Successes are group-committed (``tether.successes``); a result is checked to be
strict JSON before it joins a group, so one task's output cannot make the database
refuse the others'.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import connection
from django.db.models import F
from django.utils import timezone

from tether import registry, store, strictjson
from tether.context import TaskContext
from tether.exceptions import (
    CancelSignal,
    LeaseLostSignal,
    PauseSignal,
    ResultNotJSON,
    ShutdownSignal,
    StopKind,
    TetherError,
)
from tether.models import Task
from tether.states import Status
from tether.store import DjangoStore, Job
from tether.successes import Success, SuccessWriter
from tether.transitions import release, transition

log = logging.getLogger(__name__)
MAX_BACKOFF = 300.0
MAX_ERROR_CHARS = 4000


class Runner:
    """Executes jobs. ``register``/``unregister`` let the executor reach live contexts."""

    def __init__(
        self,
        worker: str,
        register: Callable[[int, TaskContext], None] = lambda i, c: None,
        unregister: Callable[[int], None] = lambda i: None,
        on_success: Callable[[], None] | None = None,
    ) -> None:
        """``on_success``: when given, successes are left for the caller to write with
        ``commit_successes()`` (from a committer thread); otherwise they are written at
        once by the thread that ran the task."""
        self.worker = worker
        self._on_success = on_success
        self.store = DjangoStore()
        self._register = register
        self._unregister = unregister
        self._successes = SuccessWriter(worker)

    def context(self, job: Job) -> TaskContext:
        return TaskContext(
            task_id=job.task_id,
            token=job.token,
            store=self.store,
            state=job.checkpoint,
            attempt=job.attempts,
            input=job.input,
            owner_id=job.owner_id,
        )

    def run(self, job: Job) -> None:
        ctx = self.context(job)
        self._register(job.task_id, ctx)
        try:
            if job.rollback:
                self._rollback(job, ctx)
            elif ctx.should_stop():  # paused or cancelled while waiting for a slot
                self._after_signal(job, ctx)
            else:
                self._execute(job, ctx)
        finally:
            self._unregister(job.task_id)

    def take_over(self, task_id: int, lease: float) -> threading.Thread | None:
        """Roll back a cancelled task of ours whose thread is stuck (see
        ControlBoard.overdue): a new run token fences the stuck run, and a new thread
        runs the rollback."""
        job = store.take_over(self.worker, task_id, lease)
        return None if job is None else self.run_in_thread(job)

    def run_in_thread(self, job: Job) -> threading.Thread:
        """Run ``job`` in a new thread (a rollback taking over, or a claimed job that
        was paused or cancelled before it started)."""
        thread = threading.Thread(
            target=self._guarded_run, args=(job,), name=f"tether-settle-{job.task_id}", daemon=True
        )
        thread.start()
        return thread

    def _guarded_run(self, job: Job) -> None:
        try:
            self.run(job)
        except Exception:
            log.exception("task %s: settling failed", job.task_id)
        finally:
            connection.close()

    def give_back(self, job: Job, reason: str = "server shutdown") -> None:
        """Return a claimed job that was never started (the executor is stopping, or no
        thread became free for it); no attempt is used."""
        self._requeue_for_shutdown(job, reason)

    # -- outcomes -----------------------------------------------------------------
    def _execute(self, job: Job, ctx: TaskContext) -> None:
        try:
            ttype = registry.get_type(job.type)
            ctx.in_task_code = True
            try:
                result = ttype.func(ctx, **job.params)  # final progress written on success
            finally:
                ctx.in_task_code = False
        except (PauseSignal, CancelSignal):
            if ctx.terminated:  # forced in at any bytecode: the connection may be torn
                connection.close()
            self._after_signal(job, ctx)
        except ShutdownSignal:
            self._requeue_for_shutdown(job)
        except LeaseLostSignal:
            log.warning("task %s: lease lost, stopping without writing", job.task_id)
        except Exception as exc:  # the task failed; never let it take the worker down
            self._failed(job, ctx, exc)
        else:
            self._succeeded(job, ctx, result)

    def _current(self, job: Job) -> Status | None:
        status = (
            Task.objects.filter(id=job.task_id, run_token=job.token)
            .values_list("status", flat=True)
            .first()
        )
        return None if status is None else Status(status)

    def _after_signal(self, job: Job, ctx: TaskContext) -> None:
        # The usual cases take one transaction: the last progress and checkpoint are
        # written with the move pausing -> paused, or cancelling -> cancelled for a
        # type without a rollback hook.
        quick: tuple[Status, Status, str] | None = None
        if ctx.stop_requested == StopKind.PAUSE:
            quick = (Status.PAUSING, Status.PAUSED, "reached checkpoint")
        elif ctx.stop_requested == StopKind.CANCEL and not self._has_rollback(job):
            quick = (Status.CANCELLING, Status.CANCELLED, "rollback done")
        if quick and transition(
            [job.task_id],
            quick[1],
            actor=self.worker,
            reason=quick[2],
            token=job.token,
            only_from=[quick[0]],
            updates=ctx.pending_writes(),
        ):
            return
        with contextlib.suppress(LeaseLostSignal):
            ctx.flush()  # keep what it did, for the rollback or the next run
        status = self._current(job)
        if status == Status.CANCELLING:
            self._rollback(job, ctx)
        elif status == Status.PAUSING:
            self._pause(job)
        elif status == Status.RUNNING:  # cannot happen by the table; never strand it
            transition(
                [job.task_id],
                Status.QUEUED,
                actor=self.worker,
                reason="stale control request",
                token=job.token,
            )

    def _pause(self, job: Job) -> None:
        transition(
            [job.task_id],
            Status.PAUSED,
            actor=self.worker,
            reason="reached checkpoint",
            token=job.token,
        )

    def _succeeded(self, job: Job, ctx: TaskContext, result: Any) -> None:
        try:
            strictjson.check(result, "result")
            progress = ctx.progress_snapshot() if ctx.reported_progress else None
            if progress and progress["total"] and progress["done"] < progress["total"]:
                progress.update(done=progress["total"], percent=100.0, eta_seconds=0)
            strictjson.check(progress, "progress")
        except Exception as exc:  # it cannot be stored: this task fails, alone
            self._failed(job, ctx, exc)
            return
        self._successes.add(Success(job, ctx, result, progress))
        if self._on_success is not None:
            self._on_success()
        else:
            self.commit_successes()

    def commit_successes(self) -> None:
        """Group commit: write every waiting success; if another thread is already
        writing, it picks ours up after its own commit."""
        for item in self._successes.commit():  # cancelled after it returned: undo it
            if self._current(item.job) == Status.CANCELLING:
                self._rollback(item.job, item.ctx)

    def _failed(self, job: Job, ctx: TaskContext, exc: BaseException) -> None:
        kind = exc.code if isinstance(exc, ResultNotJSON) else type(exc).__name__
        message = strictjson.safe_text(f"{kind}: {exc}", MAX_ERROR_CHARS)
        log.info("task %s failed: %s", job.task_id, message, exc_info=exc)
        status = self._current(job)
        if status == Status.CANCELLING:
            self._rollback(job, ctx)
            return
        retry = status == Status.RUNNING and job.attempts < job.max_attempts
        if retry and not isinstance(exc, TetherError):
            backoff = _backoff(job)
            transition(
                [job.task_id],
                Status.QUEUED,
                actor=self.worker,
                token=job.token,
                reason=f"retry in {backoff:g}s after {message}",
                updates={
                    "attempts": F("attempts") + 1,
                    "error": message,
                    "run_after": timezone.now() + timedelta(seconds=backoff),
                },
            )
        else:
            self._fail(job, message)

    def _fail(self, job: Job, message: str) -> None:
        transition(
            [job.task_id],
            Status.FAILED,
            actor=self.worker,
            reason=message,
            token=job.token,
            updates={"error": message},
        )

    def _release(self, job: Job) -> None:
        """Give up ownership without a status change (a rollback resumes elsewhere)."""
        release(job.task_id, token=job.token)

    def _requeue_for_shutdown(self, job: Job, reason: str = "server shutdown") -> None:
        status = self._current(job)
        if status == Status.RUNNING:
            transition(
                [job.task_id], Status.QUEUED, actor=self.worker, reason=reason, token=job.token
            )
        elif status == Status.PAUSING:
            self._pause(job)
        elif status == Status.CANCELLING:
            self._release(job)

    @staticmethod
    def _has_rollback(job: Job) -> bool:
        try:
            return registry.get_type(job.type).rollback is not None
        except TetherError:
            return True  # unknown type: take the careful path

    def _rollback(self, job: Job, ctx: TaskContext) -> None:
        ctx.begin_rollback()
        try:
            ctx.flush()  # the checkpoint a resumed rollback will start from
            ttype = registry.get_type(job.type)
            if ttype.rollback is not None:
                ttype.rollback(ctx)
        except ShutdownSignal:
            self._release(job)
            return  # the next start resumes the rollback
        except LeaseLostSignal:
            return  # the new owner rolls back
        except Exception as exc:
            message = strictjson.safe_text(
                f"rollback failed: {type(exc).__name__}: {exc}", MAX_ERROR_CHARS
            )
            log.exception("task %s: %s", job.task_id, message)
            self._fail(job, message)
            return
        transition(
            [job.task_id],
            Status.CANCELLED,
            actor=self.worker,
            reason="rollback done",
            token=job.token,
        )


def _backoff(job: Job) -> float:
    base = 1.0
    with contextlib.suppress(TetherError):
        base = registry.get_type(job.type).retry_backoff
    return float(min(base * 2 ** (job.attempts - 1), MAX_BACKOFF))
