"""Group commit of successes: every success waiting is written in one transaction, so
a busy executor pays one commit per batch rather than one per task.

A result is checked to be strict JSON before it waits here (see the runner), so no
row can make the database refuse the group. Should a group write fail anyway (a row
too large for the server, say), its successes are written one at a time: a row the
database still refuses fails its own task (``result_not_stored``) and the others are
written once. Nothing that returned is ever left to run again because of another row.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from tether import strictjson
from tether.context import TaskContext
from tether.events import bus
from tether.models import Task
from tether.states import Status
from tether.store import Job
from tether.transitions import transition

log = logging.getLogger(__name__)


@dataclass
class Success:
    job: Job
    ctx: TaskContext
    result: Any
    progress: dict[str, Any] | None


class SuccessWriter:
    """The successes of one worker waiting to be written, and their group commit."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self._waiting: list[Success] = []
        self._lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def add(self, item: Success) -> None:
        with self._lock:
            self._waiting.append(item)

    def commit(self) -> list[Success]:
        """Write every waiting success; if another thread is already writing, it picks
        ours up after its own commit. Returns the successes that could not move to
        succeeded (cancelled after the function returned: the caller undoes them).
        When the database is unreachable the error is raised and what was not written
        waits for the next call."""
        late: list[Success] = []
        while self._commit_lock.acquire(blocking=False):
            try:
                with self._lock:
                    batch, self._waiting = self._waiting, []
                late += self._write_batch(batch) if batch else []
            finally:
                self._commit_lock.release()
            with self._lock:
                if not self._waiting:
                    break
        return late

    def _write_batch(self, batch: list[Success]) -> list[Success]:
        """Write ``batch`` in one transaction; if the database refuses it, write its
        successes one by one, so a row it refuses fails that task only. When the
        database refuses even that (it is unreachable), what is not written yet goes
        back to the waiting list and the error is raised: the caller tries again later.
        Returns the successes that could not move to succeeded."""
        try:
            return self._write(batch)
        except Exception:
            log.warning(
                "writing %d successes at once failed; writing them one by one",
                len(batch),
                exc_info=True,
            )
            drop_broken_connection()
        late: list[Success] = []
        for n, item in enumerate(batch):
            try:
                late += self._write_one(item)
            except Exception:
                self._put_back(batch[n:])
                raise
        return late

    def _write_one(self, item: Success) -> list[Success]:
        """Write one success; if the database refuses it twice, fail its task without
        the result (``result_not_stored``) rather than leave it to run again."""
        error: Exception | None = None
        for _ in range(2):  # once more, in case the first failure was passing
            try:
                return self._write([item])
            except Exception as exc:
                error = exc
                drop_broken_connection()
        message = strictjson.safe_text(
            f"result_not_stored: the database refused the result: {error}"
        )
        log.error("task %s: %s", item.job.task_id, message)
        failed = transition(  # raises if the database refuses this too: it is unreachable
            [item.job.task_id],
            Status.FAILED,
            actor=self.worker,
            reason=message,
            token=item.job.token,
            only_from=[Status.RUNNING, Status.PAUSING],
            updates={"error": message},
        )
        return [] if failed else [item]  # not failed: cancelled meanwhile, or not ours

    def _put_back(self, items: list[Success]) -> None:
        with self._lock:
            self._waiting[:0] = items

    def _write(self, batch: list[Success]) -> list[Success]:
        by_token: dict[str, list[Success]] = defaultdict(list)
        for item in batch:
            by_token[item.job.token].append(item)
        moved: set[int] = set()
        now = timezone.now()
        final: list[bus.ProgressUpdate] = []  # the last figures, published with the moves
        with transaction.atomic():
            transaction.on_commit(lambda: bus.publish(final) if final else None)
            for token, items in by_token.items():
                for item in items:
                    values = {"result": item.result}
                    if item.progress is not None:
                        values["progress"] = item.progress
                    if item.result is not None or item.progress is not None:
                        written = Task.objects.filter(
                            id=item.job.task_id,
                            run_token=token,
                            status__in=[Status.RUNNING, Status.PAUSING],
                        ).update(**values)
                        if written and item.progress is not None:
                            final.append(
                                bus.ProgressUpdate(item.job.task_id, item.progress, at=now)
                            )
                changes = transition(
                    [i.job.task_id for i in items],
                    Status.SUCCEEDED,
                    actor=self.worker,
                    reason="returned",
                    token=token,
                )
                moved.update(c.task_id for c in changes)
        return [item for item in batch if item.job.task_id not in moved]


def drop_broken_connection() -> None:
    """After a database error: close the connection if it broke, so that the next
    query opens a new one instead of failing again."""
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
