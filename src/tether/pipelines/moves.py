"""The one place that changes a pipeline's status: a conditional update plus an event.

Callers hold the pipeline's row lock (``lock``) inside their transaction; the change
is published on the event stream after commit.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from tether.events import bus
from tether.exceptions import IllegalTransition, TetherError
from tether.models import Pipeline, PipelineEvent
from tether.states import FINAL, PIPELINE_TRANSITIONS, Status


class PipelineNotFound(TetherError):
    code = "not_found"
    http_status = 404
    default_message = "No such pipeline."


class IllegalPipelineMove(IllegalTransition):
    def __init__(self, action: str, status: str) -> None:
        super().__init__(action, status)
        self.message = f"cannot {action} a pipeline that is {status}"
        self.args = (self.message,)


def lock(pipeline_id: int) -> Pipeline:
    """The pipeline, its row locked until the transaction ends."""
    found = Pipeline.objects.select_for_update().filter(id=pipeline_id).first()
    if found is None:
        raise PipelineNotFound(f"no pipeline {pipeline_id}")
    return found


def move(
    pipeline: Pipeline,
    dst: Status,
    *,
    actor: str,
    reason: str = "",
    action: str | None = None,
    updates: dict[str, Any] | None = None,
    tasks: tuple[int, ...] = (),
) -> None:
    """Move a locked pipeline to ``dst``; raises IllegalPipelineMove when the table
    does not allow it. ``pipeline`` is updated in place."""
    src = Status(pipeline.status)
    if (src, dst) not in PIPELINE_TRANSITIONS:
        raise IllegalPipelineMove(action or f"move to {dst}", src)
    now = timezone.now()
    values: dict[str, Any] = {"status": dst, "updated_at": now}
    if dst == Status.RUNNING and pipeline.started_at is None:
        values["started_at"] = now
    if dst == Status.PAUSED:
        values["paused_at"] = now
    if dst in FINAL:
        values["finished_at"] = now
    if dst == Status.QUEUED:  # resumed or retried
        values.update(paused_at=None, finished_at=None)
    values.update(updates or {})
    if not Pipeline.objects.filter(id=pipeline.pk, status=src).update(**values):
        raise RuntimeError(f"pipeline {pipeline.pk} changed while locked")
    for key, value in values.items():
        setattr(pipeline, key, value)
    event = PipelineEvent.objects.create(
        pipeline_id=pipeline.pk, from_status=src, to_status=dst, at=now, actor=actor, reason=reason
    )
    update = bus.PipelineUpdate(
        pipeline.pk, pipeline.owner_id, pipeline.name, src, dst, now, actor, reason, event.pk, tasks
    )
    transaction.on_commit(lambda: bus.publish([update]))


def record_creation(pipeline: Pipeline, *, actor: str, tasks: tuple[int, ...]) -> None:
    event = PipelineEvent.objects.create(
        pipeline_id=pipeline.pk,
        from_status=None,
        to_status=Status.QUEUED,
        at=pipeline.created_at,
        actor=actor,
        reason="submitted",
    )
    update = bus.PipelineUpdate(
        pipeline.pk,
        pipeline.owner_id,
        pipeline.name,
        None,
        Status.QUEUED,
        pipeline.created_at,
        actor,
        "submitted",
        event.pk,
        tasks,
    )
    transaction.on_commit(lambda: bus.publish([update]))
