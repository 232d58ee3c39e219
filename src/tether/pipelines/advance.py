"""What follows from a step's status change, decided in the transaction that makes it.

``on_step_changes`` runs inside ``transitions.transition`` (a step hook) with the step
tasks' rows locked; it locks the pipeline row and settles the pipeline: the next
order started when every step of the current one has succeeded, the pipeline paused
when its steps are, failed when one fails, and, once cancelled, its finished steps
undone one at a time in reverse order. All of it commits with the step's change or
not at all, so two workers finishing parallel steps at once start the next order
exactly once (the second waits for the pipeline lock, then sees both successes), and
a crash at any point leaves nothing half done.

Locks are always taken tasks first, then the pipeline: code holding a pipeline lock
never locks an existing task row (it may create tasks). Control requests
(``tether.pipelines.control``) lock the current steps' tasks before the pipeline.
Should settling fail for a reason of its own, the step's change still commits and the
periodic sweep settles the pipeline later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import OperationalError, transaction
from django.utils import timezone

from tether import strictjson
from tether.models import Pipeline, PipelineStep, Task, TaskEvent
from tether.pipelines import moves
from tether.service import insert
from tether.states import Status
from tether.transitions import Change, transition

ACTIVE_STEP = frozenset({Status.QUEUED, Status.RUNNING, Status.PAUSING})
HELD_STEP = frozenset({Status.RUNNING, Status.PAUSING})
MAX_ERROR = 4000

log = logging.getLogger(__name__)
_local = threading.local()


def on_step_changes(changes: list[Change]) -> None:
    """The transitions step hook: settle every pipeline these changes belong to."""
    ids = sorted({c.pipeline_id for c in changes if c.pipeline_id is not None})
    for pipeline_id in ids:
        if _only_starts(changes, pipeline_id):
            continue
        actor = next(c.actor for c in changes if c.pipeline_id == pipeline_id)
        try:
            with transaction.atomic():  # a savepoint: a fault here never costs the step
                settle(pipeline_id, actor=actor or "system")
        except OperationalError:
            raise  # the database's own trouble (a deadlock, a lost connection): retry all
        except Exception:
            log.exception("pipeline %s: settling after a step's change failed", pipeline_id)


def _only_starts(changes: list[Change], pipeline_id: int) -> bool:
    """Whether these changes only start steps (a claim) of a pipeline already running:
    nothing follows from that, so every step's claim need not lock the pipeline and
    read its steps (a third of the claim's statements). The step's row is locked, so
    no control request changes the pipeline meanwhile; a step of another status in
    the current order was settled by its own change (or is by the resettle chore)."""
    mine = [c for c in changes if c.pipeline_id == pipeline_id]
    return all(c.dst == Status.RUNNING for c in mine) and (
        Pipeline.objects.filter(id=pipeline_id, status=Status.RUNNING).exists()
    )


@contextmanager
def settling(pipeline_id: int) -> Iterator[bool]:
    """Mark ``pipeline_id`` as being settled by this thread; yields False when it
    already is (a change made while settling, e.g. an undo task's creation)."""
    busy: set[int] = _local.__dict__.setdefault("busy", set())
    fresh = pipeline_id not in busy
    busy.add(pipeline_id)
    try:
        yield fresh
    finally:
        if fresh:
            busy.discard(pipeline_id)


def settle(pipeline_id: int, *, actor: str) -> None:
    with settling(pipeline_id) as fresh:
        if fresh:
            settle_locked(moves.lock(pipeline_id), actor=actor)


def label(step: PipelineStep) -> str:
    """A step as its author wrote it: its name and order, and its place in the list
    (two steps of an order may share a name)."""
    return f"step {step.name} (order {step.order_no}, transformers_list[{step.index}])"


class View:
    """A locked pipeline's steps and their tasks' statuses, read once."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.steps = list(PipelineStep.objects.filter(pipeline=pipeline).order_by("index"))
        ids = [i for s in self.steps for i in (s.task_id, s.undo_task_id) if i is not None]
        self.tasks: dict[int, tuple[Status, str]] = {
            i: (Status(st), err)
            for i, st, err in Task.objects.filter(id__in=ids).values_list("id", "status", "error")
        }

    @property
    def current(self) -> list[PipelineStep]:
        return [s for s in self.steps if s.order_no == self.pipeline.current_order]

    def status(self, step: PipelineStep) -> Status:
        """A step's task status; a task deleted meanwhile counts as failed."""
        return self.tasks.get(step.task_id or 0, (Status.FAILED, ""))[0]

    def error(self, step: PipelineStep) -> str:
        return self.tasks.get(step.task_id or 0, (Status.FAILED, "its task was deleted"))[1]


def settle_locked(pipeline: Pipeline, *, actor: str) -> None:
    """Bring a locked pipeline in line with its steps (idempotent)."""
    state = Status(pipeline.status)
    if state in (Status.SUCCEEDED, Status.CANCELLED, Status.FAILED):
        return
    view = View(pipeline)
    if state == Status.CANCELLING:
        _settle_cancel(view, actor)
        return
    current = view.current
    statuses = [view.status(s) for s in current]
    failed = [s for s in current if view.status(s) == Status.FAILED]
    if failed:
        step = failed[0]
        error = f"{label(step)} failed: {view.error(step)}"
        moves.move(
            pipeline,
            Status.FAILED,
            actor=actor,
            reason=f"{label(step)} failed",
            updates={"error": strictjson.safe_text(error, MAX_ERROR)},
        )
        return
    cancelled = [s for s in current if view.status(s) in (Status.CANCELLING, Status.CANCELLED)]
    if cancelled:  # by itself (a user, or its pause expired): the whole is cancelled
        begin_cancel(pipeline, actor=actor, reason=_cancel_reason(cancelled[0]))
        _settle_cancel(View(pipeline), actor)
        return
    if all(st == Status.SUCCEEDED for st in statuses):
        if state in (Status.QUEUED, Status.RUNNING):
            _advance(view, actor)
        elif state == Status.PAUSING:
            moves.move(pipeline, Status.PAUSED, actor=actor, reason="paused between steps")
        return
    active = any(st in ACTIVE_STEP for st in statuses)
    held = any(st in HELD_STEP for st in statuses)
    if state == Status.QUEUED and held:
        moves.move(pipeline, Status.RUNNING, actor=actor, reason="a step runs")
    elif state in (Status.QUEUED, Status.RUNNING, Status.PAUSING) and not active:
        moves.move(pipeline, Status.PAUSED, actor=actor, reason="its steps are paused")
    elif state == Status.PAUSED and active:  # a step was resumed by itself
        moves.move(pipeline, Status.QUEUED, actor=actor, reason="a step was resumed")
        if held:
            moves.move(pipeline, Status.RUNNING, actor=actor, reason="a step runs")


def _cancel_reason(step: PipelineStep) -> str:
    """Why a step was cancelled by itself: its pause expired keeps its name."""
    reason = (
        TaskEvent.objects.filter(task_id=step.task_id or 0, to_status=Status.CANCELLING)
        .order_by("-id")
        .values_list("reason", flat=True)
        .first()
    )
    if reason == "pause_expired":
        return reason
    return f"{label(step)} was cancelled" + (f": {reason}" if reason else "")


def _advance(view: View, actor: str) -> None:
    pipeline = view.pipeline
    current = view.current
    results = dict(
        Task.objects.filter(id__in=[s.task_id for s in current]).values_list("id", "result")
    )
    outputs = [results.get(s.task_id or 0) for s in current]
    value: Any = outputs[0] if len(outputs) == 1 else outputs
    later = sorted({s.order_no for s in view.steps if s.order_no > pipeline.current_order})
    if not later:
        moves.move(
            pipeline,
            Status.SUCCEEDED,
            actor=actor,
            reason="last steps succeeded",
            updates={"result": value},
        )
        return
    group = [s for s in view.steps if s.order_no == later[0]]
    Pipeline.objects.filter(id=pipeline.pk).update(
        current_order=later[0], updated_at=timezone.now()
    )
    pipeline.current_order = later[0]
    start_steps(pipeline, group, value, actor=f"pipeline:{pipeline.pk}")


def start_steps(pipeline: Pipeline, group: list[PipelineStep], value: Any, *, actor: str) -> None:
    """Create the tasks of ``group`` (queued, ``value`` as their input)."""
    tasks = [
        _new_task(
            pipeline,
            type=s.name,
            queue=s.queue,
            params=s.context,
            input=value,
            max_attempts=s.max_attempts,
            max_recoveries=s.max_recoveries,
            pause_timeout=pipeline.pause_timeout,
        )
        for s in group
    ]
    insert(tasks, actor=actor)
    for step, task in zip(group, tasks, strict=True):
        step.task = task
    PipelineStep.objects.bulk_update(group, ["task"])


def _new_task(pipeline: Pipeline, **fields: Any) -> Task:
    """A queued task of ``pipeline`` (not stored yet)."""
    now = timezone.now()
    return Task(
        owner_id=pipeline.owner_id,
        pipeline=pipeline,
        created_at=now,
        updated_at=now,
        run_after=now,
        **fields,
    )


def begin_cancel(pipeline: Pipeline, *, actor: str, reason: str) -> None:
    """Move a locked pipeline to cancelling. Its current steps are cancelled by the
    caller when it holds their locks, or else after commit (``control.enforce``; the
    periodic sweep does it should this process die first)."""
    moves.move(pipeline, Status.CANCELLING, actor=actor, reason=reason, action="cancel")
    pipeline_id = pipeline.pk

    def enforce_after_commit() -> None:
        from tether.pipelines.control import enforce_quietly

        enforce_quietly(pipeline_id)

    transaction.on_commit(enforce_after_commit)


def _settle_cancel(view: View, actor: str) -> None:
    pipeline = view.pipeline
    now = timezone.now()
    if not pipeline.undoing:
        current = view.current
        if any(not view.status(s).is_final for s in current):
            return  # its running steps are still being cancelled (with their rollback)
        for step in current:
            if view.status(step) == Status.FAILED and view.error(step).startswith("rollback"):
                _fail_rollback(view, step, view.error(step), actor)
                return
        done = [s for s in current if view.status(s) == Status.CANCELLED and not s.rolled_back_at]
        for step in done:  # its own cancel ran its rollback
            step.rolled_back_at = now
        PipelineStep.objects.bulk_update(done, ["rolled_back_at"])
        Pipeline.objects.filter(id=pipeline.pk).update(undoing=True, updated_at=now)
        pipeline.undoing = True
    _undo_next(view, actor)


def _undo_next(view: View, actor: str) -> None:
    """Roll back the finished steps one at a time, the last finished first."""
    pipeline = view.pipeline
    now = timezone.now()
    for step in view.steps:
        if step.undo_task_id is None or step.rolled_back_at is not None:
            continue
        status, error = view.tasks.get(step.undo_task_id, (Status.FAILED, "its task was deleted"))
        if status == Status.CANCELLED:
            step.rolled_back_at = now
            step.save(update_fields=["rolled_back_at"])
        elif status == Status.FAILED:
            _fail_rollback(view, step, error, actor)
            return
        else:
            return  # its rollback is still running
    todo = [
        s for s in view.steps if view.status(s) == Status.SUCCEEDED and s.rolled_back_at is None
    ]
    for step in sorted(todo, key=lambda s: (s.order_no, s.index), reverse=True):
        if not step.has_rollback:
            step.rolled_back_at = now  # nothing to undo
            step.save(update_fields=["rolled_back_at"])
            continue
        _start_undo(pipeline, step)
        return
    moves.move(pipeline, Status.CANCELLED, actor=actor, reason="finished steps rolled back")


def _start_undo(pipeline: Pipeline, step: PipelineStep) -> None:
    """A task that runs ``step``'s rollback on its type's queue: created queued and
    moved to cancelling at once, so any worker of that queue takes it as a rollback,
    with the step's last checkpoint and input."""
    done = Task.objects.get(id=step.task_id or 0)
    undo = _new_task(
        pipeline,
        type=done.type,
        queue=done.queue,
        params=done.params,
        input=done.input,
        checkpoint=done.checkpoint,
        max_attempts=done.max_attempts,
        max_recoveries=done.max_recoveries,
        pause_timeout=done.pause_timeout,
    )
    actor = f"pipeline:{pipeline.pk}"
    insert([undo], actor=actor)
    step.undo_task = undo
    step.save(update_fields=["undo_task"])
    transition(
        undo.pk,
        Status.CANCELLING,
        actor=actor,
        reason=f"undo {label(step)}, task {done.pk}",
    )


def _fail_rollback(view: View, step: PipelineStep, error: str, actor: str) -> None:
    message = f"the rollback of {label(step)} failed: {error}"
    moves.move(
        view.pipeline,
        Status.FAILED,
        actor=actor,
        reason=f"the rollback of {label(step)} failed",
        updates={"error": strictjson.safe_text(message, MAX_ERROR)},
    )
