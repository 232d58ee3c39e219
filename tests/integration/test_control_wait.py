"""The pause answer waits on the event stream: with Celery-style workers in another
process, the settle they commit reaches this process over a real broker (Redis) into
its hub, which wakes the waiting request; the request does not re-read the row."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from tests.conftest import require_port
from tests.integration import tasks  # noqa: F401 (registers it_ledger)
from tests.integration.conftest import wait_until
from tests.integration.test_event_transport import WorkerProcess
from tether import executors
from tether.api import views
from tether.events import transport
from tether.events.hub import current_hub
from tether.models import Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.service]

BROKER = "redis://127.0.0.1:6379/13"  # no other test uses this database number
API = "/api/v1"


@pytest.fixture
def celery_server(settings: Any) -> Iterator[None]:
    """This process as ``tether serve`` with the Celery executor: the transport's
    consumer feeding the hub (control answers may wait up to 30 s)."""
    require_port("Redis", 6379)
    settings.TETHER = {
        **settings.TETHER,
        "EXECUTOR": "celery",
        "BROKER_URL": BROKER,
        "CONTROL_WAIT": 30.0,
    }
    transport.start_for_serve()
    try:
        wait_until(transport.receiving, "the event consumer connected")
        assert executors.current().changes_heard()
        yield
    finally:
        transport.stop()
        hub = current_hub()
        if hub is not None:
            hub.stop()  # and its database connections (the test database is dropped)
        executors.install(None)


@pytest.fixture
def other_process(celery_server: None, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A process running tasks on this database and publishing what it commits."""
    w = WorkerProcess(BROKER, tmp_path / "worker")
    w.command("run")
    yield w
    w.close()


def status_rereads(queries: list[dict[str, Any]]) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].lower().startswith("select 1 as ") and "tether_task" in q["sql"]
    ]


def test_the_pause_answer_is_woken_by_the_stream_not_by_rereads(
    other_process: WorkerProcess,
    client_for: Callable[..., APIClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(views, "RECHECK_EVERY", 3600.0)  # no safety-net re-read either
    c = client_for("alice")
    tid = c.post(f"{API}/tasks", {"type": "it_ledger", "params": {"steps": 100_000}}, "json")
    task_id = tid.json()["id"]
    wait_until(
        lambda: (Task.objects.get(pk=task_id).progress or {}).get("done", 0) >= 5,
        "the other process running the task",
    )
    answer: dict[str, Any] = {}

    def pause() -> None:
        try:
            with CaptureQueriesContext(connection) as queries:
                answer["task"] = c.post(f"{API}/tasks/{task_id}/pause", {}, "json").json()
            answer["rereads"] = status_rereads(queries.captured_queries)
        finally:
            connection.close()

    thread = threading.Thread(target=pause)
    thread.start()
    # far less than the 30 s the answer may wait: only the stream can end it this soon
    wait_until(lambda: not thread.is_alive(), "the pause answer", timeout=10)
    assert answer["task"]["status"] == "paused"
    assert answer["rereads"] == []
    c.post(f"{API}/tasks/{task_id}/cancel", {}, "json")
    wait_until(lambda: Task.objects.get(pk=task_id).status == "cancelled", "the cancel")
