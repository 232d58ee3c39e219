"""The one place that changes a task's status: a conditional update plus an event.

Rows are locked (SELECT … FOR UPDATE; SQLite serialises writers with IMMEDIATE
transactions), grouped by their current status, and each group is updated with
``WHERE status = <from>`` so a concurrent change can never be overwritten. Every
change appends a TaskEvent. Listeners are told after the transaction commits.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from django.db import OperationalError, connection, transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from tether.events import bus
from tether.exceptions import IllegalTransition, TaskNotFound
from tether.models import Task, TaskEvent
from tether.states import FINAL, Status, sources

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Change:
    """One committed status change. ``event_id`` is its TaskEvent's id (None for a
    release, which records no event); the rest describes it for the event stream."""

    task_id: int
    src: Status | None
    dst: Status
    reason: str
    event_id: int | None = None
    owner_id: int | None = None
    task_type: str = ""
    at: datetime | None = None
    actor: str = ""
    pipeline_id: int | None = None


Listener = Callable[[list[Change]], None]
_listeners: list[Listener] = []
_step_hooks: list[Listener] = []

DEADLOCK_RETRIES = 3
P = ParamSpec("P")
R = TypeVar("R")
RELEASE = {"worker": None, "run_token": None, "lease_expires_at": None}
ROW = ("id", "status", "owner_id", "type", "pipeline_id")


def subscribe(listener: Listener) -> None:
    """Call ``listener(changes)`` after every committed batch of status changes."""
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def add_step_hook(hook: Listener) -> None:
    """Call ``hook(changes)`` inside the transaction that changes a pipeline step's
    status, with the task rows still locked: what follows from the change (the next
    step started, the pipeline paused …) commits with it, or not at all."""
    if hook not in _step_hooks:
        _step_hooks.append(hook)


_waiters: dict[int, list[tuple[frozenset[Status], threading.Event]]] = defaultdict(list)
_waiters_lock = threading.Lock()


@contextmanager
def watch(task_id: int, statuses: Iterable[Status]) -> Iterator[threading.Event]:
    """An event set when this process commits a change of ``task_id`` to one of
    ``statuses``. Enter it before causing the change so none is missed."""
    entry = (frozenset(statuses), threading.Event())
    with _waiters_lock:
        _waiters[task_id].append(entry)
    try:
        yield entry[1]
    finally:
        with _waiters_lock:
            _waiters[task_id].remove(entry)
            if not _waiters[task_id]:
                del _waiters[task_id]


def wake_waiters(changes: Iterable[Change]) -> None:
    """Set the ``watch`` events these changes satisfy (changes committed here, or heard
    from other processes on the event stream)."""
    if _waiters:
        with _waiters_lock:
            for c in changes:
                for statuses, event in _waiters.get(c.task_id, ()):
                    if c.dst in statuses:
                        event.set()


def _notify(changes: list[Change]) -> None:
    recorded = [c for c in changes if c.event_id is not None]
    if recorded:
        bus.publish(recorded)
    wake_waiters(changes)
    for listener in list(_listeners):
        try:
            listener(changes)
        except Exception:  # a listener must never break a transition
            log.exception("transition listener failed")


def _implied_updates(dst: Status, now: Any) -> dict[str, Any]:
    updates: dict[str, Any] = {"status": dst, "updated_at": now}
    if dst in (Status.QUEUED, Status.PAUSED) or dst in FINAL:
        updates.update(RELEASE)
    if dst == Status.RUNNING:
        updates["started_at"] = Coalesce(F("started_at"), Value(now))
    if dst == Status.PAUSED:
        updates["paused_at"] = now
    if dst in FINAL:
        updates["finished_at"] = now
    return updates


def deadlocked(exc: BaseException) -> bool:
    """Whether the database chose this transaction as a deadlock's victim (PostgreSQL
    40P01, MariaDB/MySQL 1213): it was rolled back whole and may simply run again."""
    cause = exc.__cause__
    if getattr(cause, "sqlstate", None) == "40P01":
        return True
    args: tuple[Any, ...] = getattr(cause, "args", ())
    return bool(args) and args[0] == 1213


def retried_on_deadlock(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` again (up to DEADLOCK_RETRIES times) when its own transaction was a
    deadlock's victim; inside a caller's transaction the caller must decide."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                return fn(*args, **kwargs)
            except OperationalError as exc:
                if connection.in_atomic_block or not deadlocked(exc) or attempt == DEADLOCK_RETRIES:
                    raise
                log.warning("a status change was a deadlock's victim; trying again (%d)", attempt)
        raise AssertionError("unreachable")

    return run


@retried_on_deadlock
def transition(
    ids: int | Sequence[int],
    dst: Status | Mapping[Status, Status],
    *,
    actor: str,
    reason: str = "",
    only_from: Iterable[Status] | None = None,
    updates: dict[str, Any] | None = None,
    token: str | None = None,
    action: str | None = None,
) -> list[Change]:
    """Move tasks to ``dst`` where the table allows it.

    With a single id, an illegal move raises IllegalTransition (carrying the current
    status) and a missing task raises TaskNotFound; with a sequence, tasks that cannot
    move are skipped. ``only_from`` narrows the legal sources; ``token`` requires the
    caller to still own the task (fencing against a worker that lost its lease).
    ``dst`` may map current statuses to targets (pause: queued -> paused, running ->
    pausing) so that the choice and the change happen under one lock.
    """
    single = isinstance(ids, int)
    id_list = [ids] if isinstance(ids, int) else list(ids)
    if not id_list:
        return []
    if isinstance(dst, Mapping):
        route = {src: to for src, to in dst.items() if src in sources(to)}
    else:
        route = dict.fromkeys(sources(dst), dst)
    if only_from is not None:
        route = {src: to for src, to in route.items() if src in set(only_from)}
    now = timezone.now()
    with transaction.atomic():
        qs = Task.objects.select_for_update().filter(id__in=id_list).order_by("id")
        if token is not None:
            qs = qs.filter(run_token=token)
        rows = {i: rest for i, *rest in qs.values_list(*ROW)}
        if single and not rows:
            if token is not None and Task.objects.filter(id=id_list[0]).exists():
                return []
            raise TaskNotFound()
        groups: dict[Status, list[int]] = defaultdict(list)
        for task_id, (status, *_) in rows.items():
            if Status(status) in route:
                groups[Status(status)].append(task_id)
        if single and not groups:
            raise IllegalTransition(action or f"move to {dst}", rows[id_list[0]][0])
        moves: list[tuple[int, Status, Status]] = []
        for src, group in groups.items():
            to = route[src]
            values = {**_implied_updates(to, now), **(updates or {})}
            n = Task.objects.filter(id__in=group, status=src).update(**values)
            if n != len(group):  # cannot happen while the rows are locked
                raise RuntimeError(f"transition raced: {n} of {len(group)} rows moved")
            moves += [(t, src, to) for t in group]
        events = _record(
            [
                TaskEvent(
                    task_id=t, from_status=src, to_status=to, at=now, actor=actor, reason=reason
                )
                for t, src, to in moves
            ]
        )
        changes = [
            Change(t, src, to, reason, e.pk, rows[t][1], rows[t][2], now, actor, rows[t][3])
            for (t, src, to), e in zip(moves, events, strict=True)
        ]
        if changes:
            final = (updates or {}).get("progress")
            if final is not None:  # the last figures, written with the move
                transaction.on_commit(lambda: _publish_progress(changes, final))
            # before the step hooks': the stream tells this change before what follows
            transaction.on_commit(lambda: _notify(changes))
        _run_step_hooks(changes)
    return changes


def _run_step_hooks(changes: list[Change]) -> None:
    steps = [c for c in changes if c.pipeline_id is not None]
    for hook in _step_hooks if steps else ():
        hook(steps)


def _publish_progress(changes: list[Change], progress: dict[str, Any]) -> None:
    bus.publish(
        [bus.ProgressUpdate(c.task_id, progress, c.owner_id, c.task_type, c.at) for c in changes]
    )


def release(task_id: int, *, token: str | None = None, status: Status | None = None) -> bool:
    """Give up ownership without a status change (a rollback to resume elsewhere, or
    a queued/paused/final row that kept an owner). Listeners hear a cancelling task's
    release as a change to ``cancelling`` so it is handed to a worker again."""
    qs = Task.objects.filter(id=task_id)
    if token is not None:
        qs = qs.filter(run_token=token)
    if status is not None:
        qs = qs.filter(status=status)
    with transaction.atomic():
        row = qs.select_for_update().values_list("status", flat=True).first()
        if row is None or not qs.update(**RELEASE):
            return False
        if row == Status.CANCELLING:
            changes = [Change(task_id, Status.CANCELLING, Status.CANCELLING, "released")]
            transaction.on_commit(lambda: _notify(changes))
    return True


def record_creation(tasks: Sequence[Task], *, actor: str) -> None:
    """Append the first event (None -> queued) for new tasks; call inside their transaction."""
    events = _record(
        [
            TaskEvent(
                task_id=t.pk,
                from_status=None,
                to_status=Status.QUEUED,
                at=t.created_at,
                actor=actor,
                reason="submitted",
            )
            for t in tasks
        ]
    )
    changes = [
        Change(
            t.pk,
            None,
            Status.QUEUED,
            "submitted",
            e.pk,
            t.owner_id,
            t.type,
            t.created_at,
            actor,
            t.pipeline_id,
        )
        for t, e in zip(tasks, events, strict=True)
    ]
    transaction.on_commit(lambda: _notify(changes))


def _record(events: list[TaskEvent]) -> list[TaskEvent]:
    """Insert the events and learn their ids (the event stream's ids), in one statement
    where the database returns them (PostgreSQL, SQLite, MariaDB)."""
    if not events:
        return events
    if connection.features.can_return_rows_from_bulk_insert:
        return TaskEvent.objects.bulk_create(events)
    for e in events:  # MySQL: no INSERT … RETURNING
        e.save(force_insert=True)
    return events
