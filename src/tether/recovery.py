"""Recovering a task whose worker (or the server running it) was lost.

A lost process is not the task's failure, so a recovery uses no attempt: it is
counted in ``recoveries`` instead, bounded by the task's ``max_recoveries``. Each
recovery waits longer before the task runs again (the type's ``recovery_backoff``,
doubled each time, capped), so a task that itself kills its process keeps no worker
busy in a tight loop, and still ends ``failed`` once the bound is reached.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from tether import registry
from tether.exceptions import TetherError
from tether.models import Task
from tether.states import Status
from tether.transitions import release, transition

MAX_RECOVERY_DELAY = 60.0
DEFAULT_RECOVERY_BACKOFF = 1.0

LOST_WORKER = "a lost worker"
RESTART = "a server restart"


@dataclass(frozen=True)
class Held:
    """A task row held by a worker that is gone, as the reaper read it."""

    task_id: int
    status: Status
    type: str
    token: str | None
    recoveries: int
    max_recoveries: int


HELD = ("id", "status", "type", "run_token", "recoveries", "max_recoveries")


def recovery_delay(type_name: str, recovery: int) -> float:
    """Seconds before the ``recovery``-th recovery (1, 2, …) runs the task again."""
    base = DEFAULT_RECOVERY_BACKOFF
    with contextlib.suppress(TetherError):
        base = registry.get_type(type_name).recovery_backoff
    return float(min(base * 2 ** (recovery - 1), MAX_RECOVERY_DELAY))


def recover(held: Held, *, cause: str, actor: str) -> int:
    """Re-queue (running), pause (pausing) or hand the rollback to any worker
    (cancelling) a task whose owner is gone; or fail it once ``max_recoveries`` is
    used up. Fenced by the run token read with the row, so a task another reaper
    already recovered (and a live worker took again) is left alone. Returns 1 if the
    task's status changed."""
    if held.status == Status.PAUSING:  # nothing runs again: no recovery used
        return len(
            transition(
                [held.task_id],
                Status.PAUSED,
                actor=actor,
                reason=f"recovered after {cause}",
                token=held.token,
                only_from=[Status.PAUSING],
            )
        )
    if held.status not in (Status.RUNNING, Status.CANCELLING):
        release(held.task_id, status=held.status)  # queued/paused/final rows keep no owner
        return 0
    n = held.recoveries + 1
    if n > held.max_recoveries:
        lost = f"worker lost {n} times (max_recoveries {held.max_recoveries})"
        message = lost if held.status == Status.RUNNING else f"rollback failed: {lost}"
        return len(
            transition(
                [held.task_id],
                Status.FAILED,
                actor=actor,
                reason=message,
                token=held.token,
                only_from=[held.status],
                updates={"error": message},
            )
        )
    if held.status == Status.CANCELLING:  # its rollback resumes on another worker
        with transaction.atomic():
            if not release(held.task_id, token=held.token, status=Status.CANCELLING):
                return 0
            Task.objects.filter(id=held.task_id).update(recoveries=F("recoveries") + 1)
        return 1
    delay = recovery_delay(held.type, n)
    return len(
        transition(
            [held.task_id],
            Status.QUEUED,
            actor=actor,
            reason=(
                f"recovered after {cause} ({n} of {held.max_recoveries}); runs again in {delay:g}s"
            ),
            token=held.token,
            only_from=[Status.RUNNING],
            updates={
                "recoveries": F("recoveries") + 1,
                "run_after": timezone.now() + timedelta(seconds=delay),
            },
        )
    )
