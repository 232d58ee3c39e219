"""Full pause/resume/cancel/retry flows through the embedded executor (real threads,
real SQLite). Task types live in tests/integration/tasks.py."""

from __future__ import annotations

import threading
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from tests.integration import tasks as t
from tests.integration.conftest import history, wait_checkpoint, wait_status, wait_until
from tether import service, store
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Task


def user() -> Any:
    return get_user_model().objects.get_or_create(username="worker-test")[0]


def test_runs_to_success_with_history(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "fibonacci", {"n": 90})
    done = wait_status(task.pk, "succeeded")
    assert done.result == {"n": 90, "value": "2880067194370816120", "digits": 19}
    assert done.progress is not None and done.progress["percent"] == 100.0
    assert history(task.pk) == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    assert done.worker is None and done.finished_at is not None


def test_pause_frees_slot_and_resume_continues(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_ledger", {"steps": 200, "step_ms": 2})
    wait_checkpoint(task.pk, "step")
    service.pause(task.pk, actor="test")
    paused = wait_status(task.pk, "paused")
    assert paused.checkpoint is not None
    at_pause = paused.checkpoint["step"]
    assert 0 < at_pause < 200
    assert paused.worker is None  # holds no worker
    # its thread lets go of it just after the pause commits
    wait_until(lambda: task.pk not in executor.running, "the paused task's slot to be freed")
    # the freed slots run other work while it is paused
    other = service.submit(user(), "add", {"operand1": 2, "operand2": 3})
    other_done = wait_status(other.pk, "succeeded")
    assert other_done.result is not None and other_done.result["sum"] == 5
    assert t.ledger_rows(task.pk) == list(range(1, at_pause + 1))  # nothing ran while paused
    service.resume(task.pk, actor="test")
    wait_status(task.pk, "succeeded")
    assert t.ledger_rows(task.pk) == list(range(1, 201))  # each step exactly once
    assert [e[1] for e in history(task.pk)] == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]


def test_cancel_rolls_back(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_ledger", {"steps": 500, "step_ms": 2})
    wait_checkpoint(task.pk, "step")
    assert service.cancel(task.pk, actor="test") == "cancelling"
    wait_status(task.pk, "cancelled")
    assert t.ledger_rows(task.pk) == []
    assert [e[1] for e in history(task.pk)][-2:] == ["cancelling", "cancelled"]


def test_cancel_paused_task_runs_rollback_without_running_it(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_ledger", {"steps": 500, "step_ms": 2})
    wait_checkpoint(task.pk, "step")
    service.pause(task.pk, actor="test")
    wait_status(task.pk, "paused")
    assert t.ledger_rows(task.pk)
    service.cancel(task.pk, actor="test")
    wait_status(task.pk, "cancelled")
    assert t.ledger_rows(task.pk) == []
    assert "running" not in [e[1] for e in history(task.pk)][3:]


def test_cancel_queued_task_is_immediate(transactional_db: None) -> None:
    task = service.submit(user(), "countdown", {"seconds": 1})
    assert service.cancel(task.pk, actor="test") == "cancelled"
    assert [e[1] for e in history(task.pk)] == ["queued", "cancelling", "cancelled"]


def test_pause_queued_task_then_resume(executor: EmbeddedExecutor) -> None:
    gate = t.GATES.setdefault("busy", threading.Event())
    blockers = [service.submit(user(), "it_gate", {"gate": "busy"}) for _ in range(2)]
    for b in blockers:
        wait_status(b.pk, "running")
    task = service.submit(user(), "add", {"operand1": 1, "operand2": 1})
    service.pause(task.pk, actor="test")
    assert Task.objects.get(pk=task.pk).status == "paused"
    gate.set()
    for b in blockers:
        wait_status(b.pk, "succeeded")
    # a task submitted after it runs to the end: the freed slots skipped the paused one
    probe = service.submit(user(), "add", {"operand1": 2, "operand2": 2})
    wait_status(probe.pk, "succeeded")
    assert Task.objects.get(pk=task.pk).status == "paused"
    service.resume(task.pk, actor="test")
    wait_status(task.pk, "succeeded")


def test_retry_then_success(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_flaky", {"fail_times": 1})
    done = wait_status(task.pk, "succeeded")
    assert done.attempts == 2 and done.result == {"attempt": 2}
    reasons = [e.reason for e in done.events.all()]
    assert any(r.startswith("retry in") and "flaky failure" in r for r in reasons)


def test_failed_after_max_attempts(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_flaky", {"fail_times": 99})
    done = wait_status(task.pk, "failed")
    assert done.attempts == 3
    assert done.error == "ValueError: flaky failure on attempt 3"
    # the executor survived and still works
    ok = service.submit(user(), "add", {"operand1": 1, "operand2": 1})
    wait_status(ok.pk, "succeeded")


def test_rollback_failure_fails_the_task(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_bad_rollback", {})
    wait_checkpoint(task.pk, "started")
    service.cancel(task.pk, actor="test")
    done = wait_status(task.pk, "failed")
    assert "rollback failed: OSError: disk on fire" in done.error


def test_pause_expiry_cancels_with_rollback(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "it_ledger", {"steps": 500, "step_ms": 2}, pause_timeout=0.3)
    wait_checkpoint(task.pk, "step")
    service.pause(task.pk, actor="test")
    wait_status(task.pk, "paused")
    done = wait_status(task.pk, "cancelled", timeout=5)
    assert t.ledger_rows(done.pk) == []
    assert "pause_expired" in [e.reason for e in done.events.all()]


def test_stop_requeues_running_tasks_without_using_an_attempt(transactional_db: None) -> None:
    ex = EmbeddedExecutor(1, poll_interval=0.05)
    ex.start()
    task = service.submit(user(), "it_ledger", {"steps": 1000, "step_ms": 2})
    wait_checkpoint(task.pk, "step")
    ex.stop(timeout=5)
    stopped = Task.objects.get(pk=task.pk)
    assert stopped.status == "queued" and stopped.attempts == 1
    assert history(task.pk)[-1] == ("running", "queued")
    assert stopped.checkpoint is not None
    step = stopped.checkpoint["step"]
    assert t.ledger_rows(task.pk) == list(range(1, step + 1))


def test_recovery_after_crash(transactional_db: None) -> None:
    """Simulate what a killed server leaves: tasks held by a dead worker."""
    u = user()
    running, pausing, cancelling = service.submit_many(u, "it_ledger", [{"steps": 20}] * 3)
    for task, status in ((running, "running"), (pausing, "pausing"), (cancelling, "cancelling")):
        Task.objects.filter(pk=task.pk).update(
            status=status,
            worker="dead",
            run_token="x",
            lease_expires_at=timezone.now(),
            checkpoint={"step": 0},
        )
    ex = EmbeddedExecutor(2, poll_interval=0.05)
    ex.start()  # recovers everything held by any worker
    try:
        done = wait_status(running.pk, "succeeded")
        assert (done.attempts, done.recoveries) == (1, 1)  # the crash used no attempt
        assert wait_status(pausing.pk, "paused")
        assert wait_status(cancelling.pk, "cancelled")
        assert t.ledger_rows(running.pk) == list(range(1, 21))
    finally:
        ex.stop()


def test_expired_lease_is_reaped(transactional_db: None) -> None:
    task = service.submit(user(), "add", {"operand1": 1, "operand2": 1})
    store.claim("ghost", 1, lease=-1)  # a worker that claimed and vanished
    assert store.release_lost() == 1
    requeued = Task.objects.get(pk=task.pk)
    assert requeued.status == "queued" and requeued.worker is None
    assert (requeued.attempts, requeued.recoveries) == (1, 1)


def test_control_answer_waits_for_the_pause_to_settle(
    executor: EmbeddedExecutor, settings: Any
) -> None:
    from datetime import timedelta

    from rest_framework.test import APIClient

    from tether.models import ApiToken

    owner = user()
    _, raw = ApiToken.issue(owner, ttl=timedelta(days=1))
    c = APIClient()
    c.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
    task = service.submit(owner, "it_ledger", {"steps": 1000, "step_ms": 2})
    wait_status(task.pk, "running")
    settings.TETHER = {**settings.TETHER, "CONTROL_WAIT": 2.0}
    assert c.post(f"/api/v1/tasks/{task.pk}/pause").json()["status"] == "paused"
    assert c.post(f"/api/v1/tasks/{task.pk}/resume").json()["status"] in ("queued", "running")
    wait_status(task.pk, "running")
    assert c.post(f"/api/v1/tasks/{task.pk}/cancel").json()["status"] == "cancelled"


def _grace_executor(grace: float) -> EmbeddedExecutor:
    ex = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.05, cancel_grace=grace)
    ex.start()
    return ex


def test_task_ignoring_cancel_is_terminated_after_grace_then_rolled_back(
    transactional_db: None,
) -> None:
    ex = _grace_executor(0.3)
    try:
        task = service.submit(user(), "it_stubborn", {})
        wait_status(task.pk, "running")
        wait_checkpoint(task.pk, "step")
        assert service.cancel(task.pk, actor="test") == "cancelling"  # it ignores the request
        done = wait_status(task.pk, "cancelled", timeout=10)
        assert t.ledger_rows(task.pk) == []  # rolled back
        assert done.worker is None
        # the slot is free again: both slots run new work
        others = [service.submit(user(), "add", {"operand1": i, "operand2": 1}) for i in range(4)]
        for other in others:
            wait_status(other.pk, "succeeded")
    finally:
        ex.stop(timeout=5)


def test_task_stuck_in_blocking_call_is_rolled_back_and_fenced(transactional_db: None) -> None:
    ex = _grace_executor(0.2)
    try:
        task = service.submit(user(), "it_stubborn", {"block_seconds": 60})
        wait_status(task.pk, "running")
        wait_checkpoint(task.pk, "step")
        service.cancel(task.pk, actor="test")
        # rolled back from another thread while the stuck call still blocks
        done = wait_status(task.pk, "cancelled", timeout=20)
        assert not t.STUCK.get(task.pk, threading.Event()).is_set()
        assert t.ledger_rows(task.pk) == []
        # when the call returns, the old run's checkpoint write is fenced off
        t.RELEASE.setdefault(task.pk, threading.Event()).set()
        assert t.STUCK.setdefault(task.pk, threading.Event()).wait(20)
        after = Task.objects.get(pk=task.pk)
        assert after.status == "cancelled" and after.checkpoint == done.checkpoint
        assert history(task.pk)[-1] == ("cancelling", "cancelled")
    finally:
        ex.stop(timeout=5)
