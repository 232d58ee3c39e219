from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from rest_framework.test import APIClient

from tether.datasets import sql
from tether.datasets.files import data_dir
from tether.executors.embedded import EmbeddedExecutor
from tether.models import ApiToken, Task
from tether.states import Status


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    def make(name: str = "alice", staff: bool = False) -> Any:
        return get_user_model().objects.create_user(name, password="Pass-word-1234", is_staff=staff)

    return make


@pytest.fixture
def client_for(make_user: Callable[..., Any]) -> Callable[..., APIClient]:
    from datetime import timedelta

    def make(name: str = "alice", staff: bool = False) -> APIClient:
        user = make_user(name, staff)
        _, raw = ApiToken.issue(user, ttl=timedelta(days=1))
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        client.user = user  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def executor(transactional_db: None) -> Iterator[EmbeddedExecutor]:
    ex = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.1)
    ex.start()
    yield ex
    ex.stop(timeout=5)


def wait_status(task_id: int, *statuses: str, timeout: float = 10.0) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = Task.objects.get(pk=task_id)
        if task.status in statuses:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} is {task.status}, wanted {statuses}")
        time.sleep(0.01)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``check()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)
    return value


def wait_checkpoint(task_id: int, key: str, at_least: int = 1, timeout: float = 10.0) -> Task:
    """Until the task's checkpoint records ``key`` >= ``at_least``: the task has made
    durable progress (so a pause or cancel now lands midway)."""
    deadline = time.monotonic() + timeout
    while True:
        task = Task.objects.get(pk=task_id)
        if int((task.checkpoint or {}).get(key, 0)) >= at_least:
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id}: {task.checkpoint}, wanted {key} >= {at_least}")
        time.sleep(0.01)


def history(task_id: int) -> list[tuple[str | None, str]]:
    from tether.models import TaskEvent

    return list(
        TaskEvent.objects.filter(task_id=task_id)
        .order_by("id")
        .values_list("from_status", "to_status")
    )


S = Status


def dataset_tables() -> set[str]:
    """Tables of datasets, import staging and replaced datasets kept for a rollback."""
    with connection.cursor() as cur:
        return {
            t
            for t in connection.introspection.table_names(cur)
            if t.startswith(("tstg_", "tds_", "tret_"))
        }


@pytest.fixture
def datasets_cleaned(transactional_db: None) -> Iterator[None]:
    """After the test: no uploads, exports or dataset tables (the test database
    outlives the test)."""
    yield
    for kind in ("uploads", "exports"):
        shutil.rmtree(data_dir(kind), ignore_errors=True)
    for table in dataset_tables():
        sql.drop_table(table)
