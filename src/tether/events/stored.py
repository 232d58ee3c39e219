"""Status events read back from the history: for replay (``since``) and to fill gaps."""

from __future__ import annotations

from typing import Any

from django.db.models import Max, Q

from tether.models import Task, TaskEvent
from tether.states import Status
from tether.transitions import Change

FIELDS = (
    "id",
    "task_id",
    "from_status",
    "to_status",
    "reason",
    "task__owner_id",
    "task__type",
    "at",
    "actor",
    "task__pipeline_id",
)


def _change(row: tuple[Any, ...]) -> Change:
    eid, task_id, src, dst, reason, owner_id, ttype, at, actor, pipeline_id = row
    src = Status(src) if src else None
    return Change(task_id, src, Status(dst), reason, eid, owner_id, ttype, at, actor, pipeline_id)


def latest_id() -> int:
    return TaskEvent.objects.aggregate(m=Max("id"))["m"] or 0


def between(
    after: int, before: int | None = None, *, where: Q | None = None, limit: int = 1000
) -> list[Change]:
    """Events with ``after < id < before`` (and matching ``where``, on TaskEvent), oldest
    first, at most ``limit``."""
    qs = TaskEvent.objects.filter(id__gt=after)
    if before is not None:
        qs = qs.filter(id__lt=before)
    if where is not None:
        qs = qs.filter(where)
    return [_change(r) for r in qs.order_by("id").values_list(*FIELDS)[:limit]]


def task_meta(ids: list[int]) -> dict[int, tuple[int, str, int | None]]:
    """Owner id, type and pipeline id of tasks (for progress updates, which arrive
    without them)."""
    rows = Task.objects.filter(id__in=ids).values_list("id", "owner_id", "type", "pipeline_id")
    return {i: (o, t, p) for i, o, t, p in rows}


def usernames(ids: list[int]) -> dict[int, str]:
    from django.contrib.auth import get_user_model

    User = get_user_model()
    return dict(User.objects.filter(id__in=ids).values_list("id", User.USERNAME_FIELD))
