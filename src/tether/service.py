"""Operations on tasks for every front end (REST API, CLI, Python callers).

from tether import service
task = service.submit(user, "countdown", {"seconds": 5})
service.pause(task.pk, actor="user:alice")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from tether import registry
from tether.exceptions import InvalidParams, TaskNotFound, UnknownTaskType
from tether.models import Task
from tether.states import Status
from tether.transitions import record_creation, transition

PAUSE_ROUTE = {Status.QUEUED: Status.PAUSED, Status.RUNNING: Status.PAUSING}
QUEUE_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_PAUSE_TIMEOUT = 7 * 24 * 3600.0
_admission_checks: list[Callable[[], None]] = []


def add_admission_check(check: Callable[[], None]) -> None:
    """Run ``check`` before every submission; it raises (e.g. ServiceUnavailable when
    the broker is down) to refuse the submission before anything is written."""
    if check not in _admission_checks:
        _admission_checks.append(check)


def remove_admission_check(check: Callable[[], None]) -> None:
    if check in _admission_checks:
        _admission_checks.remove(check)


def _build(
    owner: Any, type_name: str, params: Any, queue: str | None, pause_timeout: float | None
) -> Task:
    ttype = registry.get_type(type_name)
    clean = ttype.validate(params)
    queue = queue or ttype.queue
    if not QUEUE_RE.match(queue):
        raise InvalidParams(
            "queue must be 1-100 letters, digits, '_', '-', '.' or ':'", field="queue"
        )
    timeout = ttype.pause_timeout if pause_timeout is None else pause_timeout
    if not 0 < timeout <= MAX_PAUSE_TIMEOUT:
        raise InvalidParams(
            f"pause_timeout must be > 0 and <= {MAX_PAUSE_TIMEOUT:g} seconds", field="pause_timeout"
        )
    now = timezone.now()
    return Task(
        owner=owner,
        type=ttype.name,
        queue=queue,
        params=clean,
        max_attempts=ttype.max_attempts,
        max_recoveries=ttype.max_recoveries,
        pause_timeout=timeout,
        created_at=now,
        updated_at=now,
        run_after=now,
    )


def submit(
    owner: Any,
    type_name: str,
    params: Any = None,
    *,
    queue: str | None = None,
    pause_timeout: float | None = None,
) -> Task:
    """Validate and queue one task. Raises UnknownTaskType or InvalidParams."""
    return submit_many(owner, type_name, [params], queue=queue, pause_timeout=pause_timeout)[0]


def submit_many(
    owner: Any,
    type_name: str,
    params_list: Sequence[Any],
    *,
    queue: str | None = None,
    pause_timeout: float | None = None,
) -> list[Task]:
    """Validate and queue many tasks of one type in one transaction (all or nothing)."""
    tasks = [_build(owner, type_name, p, queue, pause_timeout) for p in params_list]
    admit()
    with transaction.atomic():
        insert(tasks, actor=actor_of(owner))
    return tasks


def admit() -> None:
    """Run the admission checks (raise ServiceUnavailable when work cannot be taken)."""
    for check in list(_admission_checks):
        check()


def insert(tasks: Sequence[Task], *, actor: str) -> None:
    """Store new queued tasks and their first event; call inside a transaction."""
    create_rows(tasks)
    record_creation(tasks, actor=actor)


def create_rows(rows: Sequence[Model]) -> None:
    """Insert new rows of one model and learn their ids."""
    if not rows:
        return
    if connection.features.can_return_rows_from_bulk_insert:
        type(rows[0])._default_manager.bulk_create(rows, batch_size=500)
    else:  # MySQL has no INSERT … RETURNING: bulk_create would leave the ids unset
        for row in rows:
            row.save(force_insert=True)


def actor_of(user: Any) -> str:
    return f"user:{user.get_username()}" if user is not None else "system"


def visible_tasks(user: Any) -> QuerySet[Task]:
    """The tasks ``user`` may see: their own, or all of them for staff."""
    qs = Task.objects.select_related("owner")
    return qs if user.is_staff else qs.filter(owner=user)


def get_visible(user: Any, task_id: int) -> Task:
    task = visible_tasks(user).filter(id=task_id).first()
    if task is None:
        raise TaskNotFound(f"no task {task_id}")
    return task


def pause(task_id: int, *, actor: str, reason: str = "requested") -> Status:
    """queued -> paused, running -> pausing (paused at the next control point)."""
    [change] = transition(task_id, PAUSE_ROUTE, actor=actor, reason=reason, action="pause")
    return change.dst


def resume(task_id: int, *, actor: str, reason: str = "requested") -> Status:
    """paused -> queued: it continues from its last checkpoint on any worker."""
    return _move(
        task_id,
        Status.QUEUED,
        actor=actor,
        reason=reason,
        action="resume",
        only_from=[Status.PAUSED],
    )


def cancel(task_id: int, *, actor: str, reason: str = "requested") -> Status:
    """-> cancelling; the rollback hook runs, then cancelled. A task nobody holds that
    has nothing to undo (no checkpoint, or no rollback hook) is cancelled at once."""
    with transaction.atomic():
        [change] = transition(
            task_id, Status.CANCELLING, actor=actor, reason=reason, action="cancel"
        )  # locks the row until commit
        if change.src in (Status.QUEUED, Status.PAUSED):
            task = Task.objects.only("type", "checkpoint", "worker").get(id=task_id)
            if task.worker is None and _nothing_to_undo(task):
                transition(task_id, Status.CANCELLED, actor=actor, reason="nothing to undo")
                return Status.CANCELLED
    return Status.CANCELLING


def _nothing_to_undo(task: Task) -> bool:
    if not task.checkpoint:
        return True
    try:
        return registry.get_type(task.type).rollback is None
    except UnknownTaskType:
        return False


def _move(
    task_id: int,
    target: Status,
    *,
    actor: str,
    reason: str,
    action: str,
    only_from: Sequence[Status] | None = None,
) -> Status:
    transition(
        task_id, target, actor=actor, reason=reason, action=action, only_from=only_from
    )  # raises IllegalTransition / TaskNotFound
    return target
