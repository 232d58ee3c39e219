"""A result, checkpoint or progress the database cannot store fails its own task only,
with ``result_not_json``; the other tasks of its grouped write succeed once. Real
executor threads and a real database (SQLite; the Makefile reruns this on PostgreSQL
and MariaDB)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from tests.integration import tasks  # noqa: F401  (registers it_not_json)
from tests.integration.conftest import history, wait_status, wait_until
from tether import service, store, strictjson
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Task, TaskEvent
from tether.runner import Runner

LONG_LEASE = 3600.0  # a task left running would wait this long: the test fails first
FINAL = ("succeeded", "failed", "cancelled")


def user() -> Any:
    return get_user_model().objects.get_or_create(username="json-test")[0]


def wait_all_final(ids: list[int], timeout: float = 120.0) -> None:
    def all_final() -> bool:
        statuses = Task.objects.filter(id__in=ids).values_list("status", flat=True)
        return sum(1 for status in statuses if status in FINAL) == len(ids)

    wait_until(all_final, f"all of {len(ids)} tasks to finish", timeout)


def chains(ids: list[int]) -> dict[int, list[str]]:
    """Each task's statuses, leaving out claims handed back unstarted (a loaded machine
    found no free thread in time: the task did not run, no attempt was used)."""
    found: dict[int, list[str]] = defaultdict(list)
    rows = TaskEvent.objects.filter(task_id__in=ids).order_by("task_id", "id")
    for task_id, to_status, reason in rows.values_list("task_id", "to_status", "reason"):
        if reason.startswith("handed back"):
            found[task_id].pop()  # the claim it undoes
        else:
            found[task_id].append(to_status)
    return found


def test_poisoned_results_fail_alone_and_the_rest_of_their_batch_succeeds_once(
    transactional_db: None,
) -> None:
    owner = user()
    good: list[int] = []
    poisoned: dict[int, str] = {}
    for block in range(10):  # 99 sums, then one result JSON cannot hold: 1,000 tasks
        adds = [{"operand1": block * 1000 + i, "operand2": 0.5} for i in range(99)]
        good += [t.pk for t in service.submit_many(owner, "add", adds)]
        value = ("inf", "nan", "-inf")[block % 3]
        poisoned[service.submit(owner, "it_not_json", {"value": value}).pk] = value
    ex = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.1, lease=LONG_LEASE)
    ex.start()
    try:
        wait_all_final(good + list(poisoned))
    finally:
        ex.stop(timeout=10)

    found = {t.pk: t for t in Task.objects.filter(id__in=good + list(poisoned))}
    events = chains(good + list(poisoned))
    for task_id in good:
        task = found[task_id]
        assert task.status == "succeeded", (task_id, task.status, task.error)
        assert task.attempts == 1, (task_id, task.attempts)
        assert task.result is not None and task.result["sum"] == task.params["operand1"] + 0.5
        assert events[task_id] == ["queued", "running", "succeeded"], (task_id, events[task_id])
    for task_id, value in poisoned.items():
        task = found[task_id]
        assert task.status == "failed" and task.attempts == 1, (task_id, task.status)
        assert task.error == f"result_not_json: the result is not strict JSON: $.sum is {value}"
        assert task.result is None
        assert events[task_id] == ["queued", "running", "failed"], (task_id, events[task_id])


@pytest.mark.parametrize(
    ("params", "error"),
    [
        (
            {"where": "checkpoint", "value": "nan"},
            "result_not_json: the checkpoint is not strict JSON: $.rows[3] is nan",
        ),
        (
            {"where": "progress", "value": "inf"},
            "result_not_json: the progress is not strict JSON: $.done is inf",
        ),
    ],
)
def test_a_checkpoint_or_progress_json_cannot_hold_fails_the_task_without_retries(
    executor: EmbeddedExecutor, params: dict[str, str], error: str
) -> None:
    task = service.submit(user(), "it_not_json", params)
    done = wait_status(task.pk, "failed", "succeeded", timeout=30)
    assert done.status == "failed" and done.error == error
    assert done.attempts == 1 and done.checkpoint is None
    assert history(task.pk) == [(None, "queued"), ("queued", "running"), ("running", "failed")]


def test_add_reports_an_overflow_to_infinity(executor: EmbeddedExecutor) -> None:
    task = service.submit(user(), "add", {"operand1": 1e308, "operand2": 1e308})
    other = service.submit(user(), "add", {"operand1": 1e308, "operand2": -1e308})
    done = wait_status(task.pk, "failed", "succeeded", timeout=30)
    # the same on every database (PostgreSQL hands 1e308 back as a 309-digit int)
    assert done.status == "failed" and done.attempts == 1, done.error
    assert done.error == "InvalidParams: the sum overflows to infinity (1e+308 + 1e+308)"
    other_done = wait_status(other.pk, "succeeded", "failed", timeout=30)
    assert other_done.result is not None and other_done.result["sum"] == 0, other_done.error


def test_a_row_the_database_refuses_is_failed_alone_when_the_group_write_fails(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the strict-JSON check: with the check switched off, the
    database refuses the group; its rows are then written one by one."""
    owner = user()
    ids = [
        t.pk
        for t in service.submit_many(
            owner, "add", [{"operand1": i, "operand2": 1} for i in range(4)]
        )
    ]
    bad = service.submit(owner, "it_not_json", {"value": "inf"}).pk
    ids += [
        t.pk
        for t in service.submit_many(
            owner, "add", [{"operand1": 9, "operand2": i} for i in range(4)]
        )
    ]
    monkeypatch.setattr(strictjson, "check", lambda value, what="result": None)
    runner = Runner("test-committer", on_success=lambda: None)
    jobs = store.claim("test-committer", 20, lease=LONG_LEASE)
    assert len(jobs) == 9
    for job in jobs:  # each success waits for the group commit
        runner.run(job)
    assert Task.objects.filter(status="running").count() == 9
    runner.commit_successes()

    failed = Task.objects.get(pk=bad)
    assert failed.status == "failed" and failed.attempts == 1 and failed.result is None
    assert failed.error.startswith("result_not_stored: the database refused the result: ")
    assert history(bad) == [(None, "queued"), ("queued", "running"), ("running", "failed")]
    events = chains(ids)
    for task in Task.objects.filter(id__in=ids):
        assert (
            task.status == "succeeded"
            and task.result is not None
            and task.result["sum"] == task.params["operand1"] + task.params["operand2"]
        )
        assert events[task.pk] == ["queued", "running", "succeeded"]


def test_a_row_whose_stored_json_cannot_be_read_fails_alone_and_claims_go_on(
    transactional_db: None,
) -> None:
    """A checkpoint written outside Tether that Python cannot read (an integer of 5,000
    digits; every database stores it) used to fail every claim that included its row,
    so the queue behind it stalled."""
    owner = user()
    ids = [
        t.pk
        for t in service.submit_many(
            owner, "add", [{"operand1": i, "operand2": 1} for i in range(5)]
        )
    ]
    bad = ids[1]
    cast = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {Task._meta.db_table} SET checkpoint = {cast} WHERE id = %s",
            ['{"n": ' + "9" * 5000 + "}", bad],
        )
    ex = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.1, lease=LONG_LEASE)
    ex.start()
    try:
        wait_all_final(ids, timeout=60)
    finally:
        ex.stop(timeout=10)
    failed = Task.objects.get(pk=bad)
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.error.startswith(
        "result_not_json: the stored params or checkpoint cannot be read: "
    )
    assert history(bad) == [(None, "queued"), ("queued", "running"), ("running", "failed")]
    for task in Task.objects.filter(id__in=ids).exclude(pk=bad):
        assert task.status == "succeeded" and task.attempts == 1, (task.pk, task.status)
        assert chains([task.pk])[task.pk] == ["queued", "running", "succeeded"]


def test_an_error_message_quoting_nul_or_a_lone_surrogate_is_stored_escaped(
    executor: EmbeddedExecutor,
) -> None:
    task = service.submit(user(), "it_bad_text", {})
    done = wait_status(task.pk, "failed", timeout=30)
    assert done.error == "ValueError: bad\\x00byte \\ud800"
    assert history(task.pk)[-1] == ("running", "failed")
    assert done.events.last().reason == done.error  # type: ignore[union-attr]


def test_successes_wait_for_a_database_that_is_down_and_are_written_once_it_is_back(
    transactional_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group write that fails because the database is unreachable (here: every status
    change fails) keeps its successes for the next commit; none is lost or failed."""
    from django.db import OperationalError

    from tether import successes

    ids = [
        t.pk
        for t in service.submit_many(
            user(), "add", [{"operand1": i, "operand2": 1} for i in range(3)]
        )
    ]
    runner = Runner("test-committer", on_success=lambda: None)
    for job in store.claim("test-committer", 10, lease=LONG_LEASE):
        runner.run(job)

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the database is down")

    monkeypatch.setattr(successes, "transition", down)
    with pytest.raises(OperationalError):
        runner.commit_successes()
    assert set(Task.objects.filter(id__in=ids).values_list("status", flat=True)) == {"running"}
    monkeypatch.undo()
    runner.commit_successes()
    events = chains(ids)
    for task in Task.objects.filter(id__in=ids):
        assert task.status == "succeeded" and task.attempts == 1, (task.pk, task.status)
        assert events[task.pk] == ["queued", "running", "succeeded"]
