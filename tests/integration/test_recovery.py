"""Recovery after a lost worker or server: counted in ``recoveries`` (bounded by
``max_recoveries``, with growing delays), never in the attempts task errors use.

The reaper is driven directly (``store.release_lost``) on tasks a vanished worker
claimed with an already expired lease; the delay before each re-run is read from the
stored ``run_after`` instead of being waited for."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.integration import tasks  # noqa: F401 (registers it_flaky)
from tests.integration.conftest import history, wait_status
from tether import recovery, service, store
from tether.context import TaskContext
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Task, TaskEvent
from tether.registry import task
from tether.states import Status

TWO_RECOVERIES = "it_two_recoveries"


@task(name=TWO_RECOVERIES, max_recoveries=2, recovery_backoff=0.5, params={"type": "object"})
def two_recoveries(ctx: TaskContext) -> None:
    """Never run here: the tests only claim it and lose its worker."""


def user() -> Any:
    return get_user_model().objects.get_or_create(username="recovery-test")[0]


def lose_worker(task_id: int) -> tuple[Task, datetime, datetime]:
    """A worker claims the (due) task and vanishes; the reaper recovers it. Returns
    the task after that, and the times just before and after the reaper ran."""
    Task.objects.filter(pk=task_id).update(run_after=timezone.now())  # its delay is over
    [job] = store.claim("ghost", 1, lease=-1, first=task_id)
    assert job.task_id == task_id
    before = timezone.now()
    assert store.release_lost(actor="reaper") == 1
    after = timezone.now()
    return Task.objects.get(pk=task_id), before, after


def last_reason(task_id: int) -> str:
    return (
        TaskEvent.objects.filter(task_id=task_id)
        .order_by("-id")
        .values_list("reason", flat=True)[0]
    )


def test_lost_worker_uses_no_attempt_and_waits_longer_each_time(db: None) -> None:
    t = service.submit(user(), "add", {"operand1": 1, "operand2": 2})
    assert (t.recoveries, t.max_recoveries) == (0, 10)
    delays = []
    for n in range(1, 11):
        requeued, before, after = lose_worker(t.pk)
        assert requeued.status == "queued" and requeued.worker is None
        assert (requeued.attempts, requeued.recoveries) == (1, n)
        delay = recovery.recovery_delay("add", n)
        assert before.timestamp() + delay <= requeued.run_after.timestamp()
        assert requeued.run_after.timestamp() <= after.timestamp() + delay
        assert last_reason(t.pk) == f"recovered after a lost worker ({n} of 10); " + (
            f"runs again in {delay:g}s"
        )
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]  # doubled, capped at 60 s

    failed, _, _ = lose_worker(t.pk)  # the 11th loss ends it
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error == "worker lost 11 times (max_recoveries 10)"
    assert (failed.attempts, failed.recoveries) == (1, 10)
    assert last_reason(t.pk) == failed.error
    assert history(t.pk) == (
        [(None, "queued")] + [("queued", "running"), ("running", "queued")] * 10
    ) + [("queued", "running"), ("running", "failed")]


def test_task_type_sets_its_bound_and_backoff(db: None) -> None:
    t = service.submit(user(), TWO_RECOVERIES, {})
    assert t.max_recoveries == 2
    runs_after = []
    for n in (1, 2):
        requeued, before, _ = lose_worker(t.pk)
        assert requeued.recoveries == n
        runs_after.append((requeued.run_after - before).total_seconds())
        assert last_reason(t.pk).endswith(f"({n} of 2); runs again in {0.5 * 2 ** (n - 1):g}s")
    assert runs_after[0] >= 0.5 and runs_after[1] >= 1.0
    failed, _, _ = lose_worker(t.pk)
    assert failed.status == "failed" and failed.error == "worker lost 3 times (max_recoveries 2)"


def test_a_rollback_whose_worker_keeps_dying_is_bounded_too(db: None) -> None:
    t = service.submit(user(), TWO_RECOVERIES, {})
    store.claim("ghost", 1, lease=-1, first=t.pk)
    service.cancel(t.pk, actor="test")
    for n in (1, 2):  # each time, any worker may take the rollback over
        assert store.release_lost() == 1
        row = Task.objects.get(pk=t.pk)
        assert (row.status, row.worker, row.recoveries) == ("cancelling", None, n)
        [job] = store.claim("ghost", 1, lease=-1, first=t.pk)
        assert job.rollback
    assert store.release_lost() == 1
    failed = Task.objects.get(pk=t.pk)
    assert failed.status == "failed"
    assert failed.error == "rollback failed: worker lost 3 times (max_recoveries 2)"


def test_a_task_taken_again_since_the_reaper_looked_is_left_alone(db: None) -> None:
    t = service.submit(user(), "add", {"operand1": 1, "operand2": 2})
    [job] = store.claim("ghost", 1, lease=-1)
    seen = recovery.Held(t.pk, Status.RUNNING, "add", job.token, 0, 10)
    assert store.release_lost() == 1  # another reaper was first …
    Task.objects.filter(pk=t.pk).update(run_after=timezone.now())
    store.claim("alive", 1, first=t.pk)  # … and a live worker took it again
    assert recovery.recover(seen, cause=recovery.LOST_WORKER, actor="slow reaper") == 0
    row = Task.objects.get(pk=t.pk)
    assert (row.status, row.worker, row.recoveries) == ("running", "alive", 1)


def test_task_errors_still_use_attempts(executor: EmbeddedExecutor) -> None:
    retried = service.submit(user(), "it_flaky", {"fail_times": 2})
    done = wait_status(retried.pk, "succeeded")
    assert (done.attempts, done.recoveries, done.result) == (3, 0, {"attempt": 3})
    exhausted = service.submit(user(), "it_flaky", {"fail_times": 5})
    failed = wait_status(exhausted.pk, "failed")
    assert (failed.attempts, failed.recoveries) == (3, 0)
    assert failed.error == "ValueError: flaky failure on attempt 3"


def test_recovered_task_then_failing_still_has_all_its_attempts(
    transactional_db: None,
) -> None:
    """A lost worker before the task's own errors leaves max_attempts for them."""
    t = service.submit(user(), "it_flaky", {"fail_times": 2})
    store.claim("ghost", 1, lease=-1)
    assert store.release_lost() == 1
    Task.objects.filter(pk=t.pk).update(run_after=timezone.now())
    ex = EmbeddedExecutor(1, poll_interval=0.05, maintenance_interval=0.1)
    ex.start(recover=False)
    try:
        done = wait_status(t.pk, "succeeded")
    finally:
        ex.stop(timeout=5)
    assert (done.attempts, done.recoveries, done.result) == (3, 1, {"attempt": 3})
    runs = [e for e in history(t.pk) if e == ("queued", "running")]
    assert len(runs) == 4  # the lost one, then its three attempts
