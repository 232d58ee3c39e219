"""Operations on pipelines for every front end: create, pause, resume, cancel, retry.

Each runs in one transaction that locks the current steps' tasks, then the pipeline
(the order ``advance`` relies on), changes the pipeline and its steps together, and
settles the pipeline before it commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from tether import service
from tether.exceptions import IllegalTransition
from tether.housekeeping import chore
from tether.models import Pipeline, PipelineStep, Task
from tether.pipelines import advance, moves
from tether.pipelines.moves import IllegalPipelineMove, PipelineNotFound
from tether.pipelines.spec import PipelineSpec
from tether.states import Status
from tether.transitions import add_step_hook, retried_on_deadlock, transition

log = logging.getLogger(__name__)
LOCK_ATTEMPTS = 5
SWEEP_AFTER = 2.0  # seconds a pausing/cancelling pipeline is left to its fast path
RESETTLE_AFTER = 30.0

add_step_hook(advance.on_step_changes)


def create(owner: Any, spec: PipelineSpec) -> Pipeline:
    """Store a checked pipeline and queue its first steps (all in one transaction)."""
    service.admit()
    actor = service.actor_of(owner)
    with transaction.atomic():
        pipeline = Pipeline.objects.create(
            owner=owner,
            name=spec.name,
            project=spec.project,
            data_url=spec.data_url,
            pause_timeout=spec.pause_timeout,
            current_order=spec.first_order,
        )
        steps = [
            PipelineStep(
                pipeline=pipeline,
                index=s.index,
                order_no=s.order_no,
                name=s.name,
                context=s.context,
                queue=s.queue,
                max_attempts=s.max_attempts,
                max_recoveries=s.max_recoveries,
                has_rollback=s.has_rollback,
            )
            for s in spec.steps
        ]
        service.create_rows(steps)
        first = [s for s in steps if s.order_no == spec.first_order]
        with advance.settling(pipeline.pk):
            advance.start_steps(pipeline, first, spec.data_url or None, actor=actor)
        moves.record_creation(pipeline, actor=actor, tasks=tuple(s.task_id or 0 for s in first))
    return pipeline


def visible(user: Any) -> QuerySet[Pipeline]:
    qs = Pipeline.objects.select_related("owner")
    return qs if user.is_staff else qs.filter(owner=user)


def get_visible(user: Any, pipeline_id: int) -> Pipeline:
    found = visible(user).filter(id=pipeline_id).first()
    if found is None:
        raise PipelineNotFound(f"no pipeline {pipeline_id}")
    return found


@contextmanager
def _locked(pipeline_id: int) -> Iterator[tuple[Pipeline, list[int]]]:
    """The pipeline and its current steps' task ids, all locked (tasks first)."""
    for _ in range(LOCK_ATTEMPTS):
        with transaction.atomic(), advance.settling(pipeline_id):
            order = Pipeline.objects.filter(id=pipeline_id).values_list("current_order", flat=True)
            current_order = order.first()
            if current_order is None:
                raise PipelineNotFound(f"no pipeline {pipeline_id}")
            ids = list(
                PipelineStep.objects.filter(
                    pipeline_id=pipeline_id, order_no=current_order, task__isnull=False
                ).values_list("task_id", flat=True)
            )
            locked = list(
                Task.objects.select_for_update()
                .filter(id__in=ids)
                .order_by("id")
                .values_list("id", flat=True)
            )
            pipeline = moves.lock(pipeline_id)
            if pipeline.current_order != current_order:
                continue  # it advanced meanwhile: lock the new steps instead
            yield pipeline, locked
            return
    raise RuntimeError(f"pipeline {pipeline_id} kept advancing while being locked")


def _statuses(ids: list[int]) -> dict[int, Status]:
    return {i: Status(s) for i, s in Task.objects.filter(id__in=ids).values_list("id", "status")}


@retried_on_deadlock
def pause(pipeline_id: int, *, actor: str, reason: str = "requested") -> Status:
    """Queued steps pause at once, running ones at their next control point; no new
    step starts. The pipeline is ``paused`` once none of its steps runs."""
    with _locked(pipeline_id) as (pipeline, ids):
        if pipeline.status not in (Status.QUEUED, Status.RUNNING):
            raise IllegalPipelineMove("pause", pipeline.status)
        moves.move(pipeline, Status.PAUSING, actor=actor, reason=reason)
        transition(ids, service.PAUSE_ROUTE, actor=actor, reason=f"pipeline paused: {reason}")
        advance.settle_locked(pipeline, actor=actor)
        return Status(pipeline.status)


@retried_on_deadlock
def resume(pipeline_id: int, *, actor: str, reason: str = "requested") -> Status:
    """Continue where it was: paused steps are queued again (from their checkpoint),
    or the next order starts if the pipeline was paused between steps."""
    with _locked(pipeline_id) as (pipeline, ids):
        if pipeline.status != Status.PAUSED:
            raise IllegalPipelineMove("resume", pipeline.status)
        moves.move(pipeline, Status.QUEUED, actor=actor, reason=reason)
        paused = [i for i, st in _statuses(ids).items() if st == Status.PAUSED]
        transition(paused, Status.QUEUED, actor=actor, reason=f"pipeline resumed: {reason}")
        advance.settle_locked(pipeline, actor=actor)
        return Status(pipeline.status)


@retried_on_deadlock
def cancel(pipeline_id: int, *, actor: str, reason: str = "requested") -> Status:
    """Running steps are cancelled with their rollback, then every finished step is
    rolled back, the last first; the pipeline is ``cancelled`` after the last one. A
    failed pipeline may be cancelled too: what its finished steps did is undone."""
    with _locked(pipeline_id) as (pipeline, ids):
        undoable = pipeline.status == Status.FAILED and not pipeline.undoing
        if pipeline.status == Status.CANCELLING or (
            Status(pipeline.status).is_final and not undoable
        ):
            failed_undoing = pipeline.status == Status.FAILED and pipeline.undoing
            raise IllegalPipelineMove(
                "cancel", "failed in rollback" if failed_undoing else pipeline.status
            )
        moves.move(pipeline, Status.CANCELLING, actor=actor, reason=reason, action="cancel")
        _cancel_steps(ids, actor=actor, reason=f"pipeline cancelled: {reason}")
        advance.settle_locked(pipeline, actor=actor)
        return Status(pipeline.status)


def _cancel_steps(ids: list[int], *, actor: str, reason: str) -> None:
    for task_id, status in _statuses(ids).items():
        if not status.is_final and status != Status.CANCELLING:
            service.cancel(task_id, actor=actor, reason=reason)


@retried_on_deadlock
def retry(pipeline_id: int, *, actor: str, reason: str = "requested") -> Status:
    """Run a failed pipeline again from its failed steps (new tasks, the same params and
    input); the steps that succeeded keep their results."""
    with _locked(pipeline_id) as (pipeline, ids):
        if pipeline.status != Status.FAILED or pipeline.undoing:
            status = pipeline.status if pipeline.status != Status.FAILED else "failed in rollback"
            raise IllegalPipelineMove("retry", status)
        statuses = _statuses(ids)
        current = list(
            PipelineStep.objects.filter(pipeline=pipeline, order_no=pipeline.current_order)
        )
        again = [s for s in current if statuses.get(s.task_id or 0, Status.FAILED) == Status.FAILED]
        inputs = dict(
            Task.objects.filter(id__in=[s.task_id for s in again]).values_list("id", "input")
        )
        moves.move(pipeline, Status.QUEUED, actor=actor, reason=reason, updates={"error": ""})
        for step in again:
            value = inputs.get(step.task_id) if step.task_id else pipeline.data_url or None
            advance.start_steps(pipeline, [step], value, actor=actor)
        advance.settle_locked(pipeline, actor=actor)
        return Status(pipeline.status)


@retried_on_deadlock
def enforce(pipeline_id: int, *, actor: str = "system") -> None:
    """Apply a pausing or cancelling pipeline's request to its current steps (after a
    step's own change began it, or when a sweep finds it still pending)."""
    with _locked(pipeline_id) as (pipeline, ids):
        if pipeline.status == Status.PAUSING:
            transition(ids, service.PAUSE_ROUTE, actor=actor, reason="pipeline paused")
        elif pipeline.status == Status.CANCELLING and not pipeline.undoing:
            _cancel_steps(ids, actor=actor, reason="pipeline cancelled")
        advance.settle_locked(pipeline, actor=actor)


def enforce_quietly(pipeline_id: int) -> None:
    """``enforce`` after a commit: a failure is logged; the sweep tries again."""
    try:
        enforce(pipeline_id)
    except (IllegalTransition, PipelineNotFound):
        pass
    except Exception:
        log.warning("pipeline %s: applying its pause or cancel failed", pipeline_id, exc_info=True)


def _each(ids: list[int], action: Callable[[int], object]) -> int:
    done = 0
    for pipeline_id in ids:
        try:
            action(pipeline_id)
            done += 1
        except (IllegalTransition, PipelineNotFound):
            pass  # it moved on meanwhile
    return done


@chore("pipelines", every=2.0)
def sweep() -> int:
    """Pipelines whose pause or cancel is not applied yet (the process that began it
    died before it could), and paused pipelines whose pause_timeout ran out."""
    now = timezone.now()
    pending = Pipeline.objects.filter(
        status__in=[Status.PAUSING, Status.CANCELLING],
        updated_at__lt=now - timedelta(seconds=SWEEP_AFTER),
    ).values_list("id", flat=True)[:100]
    done = _each(list(pending), lambda i: enforce(i))
    expired = [
        i
        for i, paused_at, timeout in Pipeline.objects.filter(
            status=Status.PAUSED, paused_at__isnull=False
        ).values_list("id", "paused_at", "pause_timeout")
        if paused_at is not None and paused_at + timedelta(seconds=timeout) <= now
    ]
    return done + _each(expired, lambda i: cancel(i, actor="system", reason="pause_expired"))


@chore("pipelines-resettle", every=30.0)
def resettle() -> int:
    """Settle unfinished pipelines not changed for a while: a step change whose
    settling failed (and was logged) is caught up here."""
    cutoff = timezone.now() - timedelta(seconds=RESETTLE_AFTER)
    stale = Pipeline.objects.filter(
        status__in=[Status.QUEUED, Status.RUNNING, Status.PAUSING, Status.PAUSED],
        updated_at__lt=cutoff,
    ).order_by("updated_at")
    return _each(list(stale.values_list("id", flat=True)[:500]), lambda i: enforce(i))
