from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from tests.integration.conftest import history
from tether import service
from tether.exceptions import IllegalTransition, TaskNotFound
from tether.models import Task
from tether.states import Status
from tether.store import claim
from tether.transitions import Change, subscribe, transition, unsubscribe


def test_submit_records_first_event(make_user: Any) -> None:
    task = service.submit(make_user(), "add", {"operand1": 1, "operand2": 2})
    assert task.status == Status.QUEUED
    assert history(task.pk) == [(None, "queued")]
    event = task.events.get()
    assert event.actor == "user:alice" and event.reason == "submitted"


def test_illegal_transition_changes_nothing(make_user: Any) -> None:
    task = service.submit(make_user(), "add", {"operand1": 1, "operand2": 2})
    with pytest.raises(IllegalTransition) as err:
        transition(task.pk, Status.SUCCEEDED, actor="test")
    assert err.value.status == "queued"
    assert Task.objects.get(pk=task.pk).status == "queued"
    assert history(task.pk) == [(None, "queued")]


def test_missing_task(db: None) -> None:
    with pytest.raises(TaskNotFound):
        transition(999999, Status.PAUSED, actor="test")


def test_batch_skips_tasks_that_cannot_move(make_user: Any) -> None:
    a, b = service.submit_many(make_user(), "add", [{"operand1": 1, "operand2": 2}] * 2)
    service.pause(a.pk, actor="test")
    moved = transition([a.pk, b.pk], Status.RUNNING, actor="test")
    assert [c.task_id for c in moved] == [b.pk]


def test_token_fences_a_worker_that_lost_its_lease(make_user: Any) -> None:
    task = service.submit(make_user(), "add", {"operand1": 1, "operand2": 2})
    [job] = claim("w1", 1)
    assert transition([task.pk], Status.SUCCEEDED, actor="w1", token="stale") == []
    assert Task.objects.get(pk=task.pk).status == "running"
    assert transition([task.pk], Status.SUCCEEDED, actor="w1", token=job.token)


def test_listeners_hear_only_committed_changes(
    make_user: Any, django_capture_on_commit_callbacks: Any
) -> None:
    heard: list[Change] = []
    subscribe(heard.extend)
    try:
        task = service.submit(make_user(), "add", {"operand1": 1, "operand2": 2})
        with django_capture_on_commit_callbacks(execute=True):
            service.pause(task.pk, actor="test")
        assert [(c.src, c.dst) for c in heard] == [(Status.QUEUED, Status.PAUSED)]
        with pytest.raises(RuntimeError), transaction.atomic():
            transition(task.pk, Status.QUEUED, actor="test")
            raise RuntimeError("roll back")
        assert len(heard) == 1
        assert Task.objects.get(pk=task.pk).status == "paused"
    finally:
        unsubscribe(heard.extend)


def test_claim_sets_lease_and_started(make_user: Any) -> None:
    tasks = service.submit_many(make_user(), "add", [{"operand1": 1, "operand2": 2}] * 3)
    jobs = claim("w1", 2)
    assert [j.task_id for j in jobs] == [tasks[0].pk, tasks[1].pk]
    t = Task.objects.get(pk=tasks[0].pk)
    assert t.status == "running" and t.worker == "w1" and t.lease_expires_at and t.started_at
    assert claim("w2", 5)[0].task_id == tasks[2].pk
    assert claim("w3", 5) == []
