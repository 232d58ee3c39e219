"""Django implementation of the context store and the worker-side queries:
claiming work, heartbeats, recovery of lost leases and expiry of paused tasks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from tether import recovery, strictjson
from tether.events import bus
from tether.models import Task
from tether.states import Status
from tether.transitions import transition

LEASE_SECONDS = 30.0


class DjangoStore:
    """Writes a running task's progress and checkpoint, fenced by its run token."""

    def save(
        self,
        task_id: int,
        token: str,
        *,
        progress: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> bool:
        values: dict[str, Any] = {}
        if progress is not None:
            values["progress"] = progress
        if checkpoint is not None:
            values["checkpoint"] = checkpoint
        if not values:
            return True
        saved = Task.objects.filter(id=task_id, run_token=token).update(**values) == 1
        if saved and progress is not None:
            at = timezone.now()
            transaction.on_commit(lambda: bus.publish_progress(task_id, progress, at))
        return saved

    def atomic(self) -> Any:
        return transaction.atomic()


@dataclass(frozen=True)
class Job:
    """A task this worker now owns, with what it needs to run it (or, for ``rollback``,
    to undo it) without reading the row again."""

    task_id: int
    token: str
    rollback: bool = False
    type: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    max_attempts: int = 1
    input: Any = None
    owner_id: int | None = None


JOB_FIELDS = ("id", "type", "params", "checkpoint", "attempts", "max_attempts", "input", "owner_id")


def _jobs(ids: list[int], token: str, rollback: bool, actor: str = "system") -> list[Job]:
    rows = Task.objects.filter(id__in=ids).order_by("id").values_list(*JOB_FIELDS)
    try:
        found = list(rows)
    except (ValueError, RecursionError):  # one row's stored JSON cannot be read
        found = _readable_rows(rows, ids, token, actor)
    return [
        Job(
            task_id=i,
            token=token,
            rollback=rollback,
            type=typ,
            params=params or {},
            checkpoint=checkpoint or {},
            attempts=attempts,
            max_attempts=max_attempts,
            input=input_,
            owner_id=owner_id,
        )
        for i, typ, params, checkpoint, attempts, max_attempts, input_, owner_id in found
    ]


def _readable_rows(rows: Any, ids: list[int], token: str, actor: str) -> list[Any]:
    """Read the claimed rows one by one; a row whose stored params or checkpoint Python
    cannot read (written outside Tether, say an integer of 5,000 digits) fails its own
    task instead of making every claim that includes it fail."""
    found: list[Any] = []
    for task_id in ids:
        try:
            found += list(rows.filter(id=task_id))
        except (ValueError, RecursionError) as exc:
            error = strictjson.safe_text(
                f"result_not_json: the stored params or checkpoint cannot be read: {exc}"
            )
            transition(
                [task_id],
                Status.FAILED,
                actor=actor,
                reason=error,
                token=token,
                updates={"error": error, "checkpoint": None},  # (nothing may read it)
            )
    return found


def new_token() -> str:
    return uuid.uuid4().hex


def _ownership(worker: str, lease: float) -> dict[str, Any]:
    """Column values that make ``worker`` the owner of a task, with a fresh run token."""
    return {
        "worker": worker,
        "run_token": new_token(),
        "lease_expires_at": timezone.now() + timedelta(seconds=lease),
    }


def claim(
    worker: str,
    limit: int,
    queues: list[str] | None = None,
    lease: float = LEASE_SECONDS,
    first: int | None = None,
) -> list[Job]:
    """Take up to ``limit`` queued tasks (queued -> running) and cancelling tasks that
    nobody is rolling back. Safe against concurrent claimers (SKIP LOCKED).

    ``first``: a task to take before any other (the one a delivered message names);
    with ``limit=1`` only that task is considered. This is the claim guard: a task that
    is running elsewhere, paused, final or not due is never taken, so a redelivered or
    duplicate message never runs a task twice."""
    if limit <= 0:
        return []
    now = timezone.now()
    own = _ownership(worker, lease)
    token = own["run_token"]
    only_first = first is not None and limit == 1
    jobs: list[Job] = []
    with transaction.atomic():
        orphans = Task.objects.filter(status=Status.CANCELLING, worker__isnull=True)
        if only_first:
            orphans = orphans.filter(id__in=[first])
        elif queues:
            orphans = orphans.filter(queue__in=queues)
        orphan_ids = _lock_ids(orphans, first, limit)
        if orphan_ids:
            Task.objects.filter(id__in=orphan_ids, worker__isnull=True).update(**own)
            jobs += _jobs(orphan_ids, token, rollback=True, actor=worker)
        ready = Task.objects.filter(status=Status.QUEUED, run_after__lte=now)
        if only_first:
            ready = ready.filter(id__in=[first])
        elif queues:
            ready = ready.filter(queue__in=queues)
        ids = _lock_ids(ready, first, limit - len(jobs))
        if ids:
            moved = transition(
                ids,
                Status.RUNNING,
                actor=worker,
                reason="claimed",
                only_from=[Status.QUEUED],
                updates=own,
            )
            jobs += _jobs([c.task_id for c in moved], token, rollback=False, actor=worker)
    return jobs


def _lock_ids(rows: Any, first: int | None, limit: int) -> list[int]:
    """Lock up to ``limit`` of ``rows`` (``first`` before the oldest others), skipping
    rows another claimer holds."""
    if limit <= 0:
        return []
    ids: list[int] = []
    if first is not None:
        ids = list(
            rows.filter(id=first).select_for_update(skip_locked=True).values_list("id", flat=True)
        )
    if len(ids) < limit:
        others = rows.exclude(id=first) if first is not None else rows
        ids += (
            others.order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[: limit - len(ids)]
        )
    return ids


def has_work(queues: list[str] | None = None) -> bool:
    """A lock-free look: would ``claim`` find anything now? Lets a claimer skip the
    write transaction when nothing is due (on SQLite that transaction would hold the
    one write lock, and make a commit that queues work wait for it)."""
    due = Q(status=Status.QUEUED, run_after__lte=timezone.now()) | Q(
        status=Status.CANCELLING, worker__isnull=True
    )
    rows = Task.objects.filter(due)
    return (rows.filter(queue__in=queues) if queues else rows).exists()


def claimable(task_id: int) -> bool:
    """A cheap, lock-free look: could a message for ``task_id`` still claim it? (Queued,
    or cancelling with nobody rolling it back.) ``claim`` decides for certain."""
    row = Task.objects.filter(id=task_id).values_list("status", "worker").first()
    return row is not None and (
        row[0] == Status.QUEUED or (row[0] == Status.CANCELLING and row[1] is None)
    )


def take_over(worker: str, task_id: int, lease: float = LEASE_SECONDS) -> Job | None:
    """A fresh run token on a cancelling task ``worker`` holds, for a rollback that
    replaces a stuck run (whose later writes the new token fences off)."""
    own = _ownership(worker, lease)
    if not Task.objects.filter(id=task_id, worker=worker, status=Status.CANCELLING).update(**own):
        return None
    jobs = _jobs([task_id], own["run_token"], rollback=True, actor=worker)
    return jobs[0] if jobs else None


def stale_queued(older_than: float, limit: int = 500) -> list[tuple[int, str]]:
    """Tasks whose message may be lost (broker restarted, or down when it was sent):
    due queued tasks, and cancelling tasks nobody rolls back, unclaimed and not
    published for ``older_than`` seconds. Each is marked as published by this call (a
    conditional update), so one reaper re-publishes it."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than)
    unpublished = Q(published_at__isnull=True) | Q(published_at__lt=cutoff)
    waiting = Q(status=Status.QUEUED, run_after__lte=cutoff) | Q(
        status=Status.CANCELLING, updated_at__lte=cutoff
    )
    due = Task.objects.filter(waiting, unpublished, worker__isnull=True)
    picked: list[tuple[int, str]] = []
    for task_id, queue in due.order_by("id").values_list("id", "queue")[:limit]:
        mine = Task.objects.filter(
            unpublished,
            id=task_id,
            worker__isnull=True,
            status__in=[Status.QUEUED, Status.CANCELLING],
        )
        if mine.update(published_at=now):
            picked.append((task_id, queue))
    return picked


def heartbeat(worker: str, task_ids: list[int], lease: float = LEASE_SECONDS) -> int:
    """Renew the lease of the tasks this worker still works on. A task whose runner
    died without releasing it (a crashed thread) is not renewed, so it is recovered
    when its lease runs out."""
    if not task_ids:
        return 0
    until = timezone.now() + timedelta(seconds=lease)
    return Task.objects.filter(worker=worker, id__in=task_ids).update(lease_expires_at=until)


def pending_controls(worker: str) -> dict[int, str]:
    """Tasks held by ``worker`` that were asked to pause or cancel."""
    rows = Task.objects.filter(worker=worker, status__in=[Status.PAUSING, Status.CANCELLING])
    return dict(rows.values_list("id", "status"))


def release_lost(
    *, worker_prefix: str | None = None, expired_only: bool = True, actor: str = "system"
) -> int:
    """Recover tasks whose worker is gone (see tether.recovery): running -> queued
    (no attempt used; recoveries + 1, or failed when they are used up), pausing ->
    paused, cancelling -> rollback by any worker."""
    held = Task.objects.filter(worker__isnull=False)
    if expired_only:
        held = held.filter(lease_expires_at__lt=timezone.now())
    if worker_prefix:
        held = held.filter(worker__startswith=worker_prefix)
    cause = recovery.LOST_WORKER if expired_only else recovery.RESTART
    rows = [
        recovery.Held(i, Status(st), *rest) for i, st, *rest in held.values_list(*recovery.HELD)
    ]
    return sum(recovery.recover(row, cause=cause, actor=actor) for row in rows)


def expire_paused(actor: str = "system") -> int:
    """Cancel (with rollback) paused tasks whose pause_timeout has run out."""
    now = timezone.now()
    ids = [
        t_id
        for t_id, paused_at, timeout in Task.objects.filter(
            status=Status.PAUSED, paused_at__isnull=False
        ).values_list("id", "paused_at", "pause_timeout")
        if paused_at is not None and paused_at + timedelta(seconds=timeout) <= now
    ]
    return len(transition(ids, Status.CANCELLING, actor=actor, reason="pause_expired"))


def next_wakeup(queues: list[str] | None = None) -> float | None:
    """Seconds until the earliest delayed (retrying) task becomes ready."""
    qs = Task.objects.filter(status=Status.QUEUED, run_after__gt=timezone.now())
    if queues:
        qs = qs.filter(queue__in=queues)
    first = qs.order_by("run_after").values_list("run_after", flat=True).first()
    return None if first is None else max((first - timezone.now()).total_seconds(), 0.0)


__all__ = [
    "DjangoStore",
    "Job",
    "claim",
    "expire_paused",
    "heartbeat",
    "pending_controls",
    "release_lost",
]
