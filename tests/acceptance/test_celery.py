"""The Celery executor with real processes: `tether serve` (API only) and `tether worker`
on PostgreSQL + Redis. Needs both services: skipped locally without them, failed in CI."""

from __future__ import annotations

import signal
import time

import httpx

from tests.acceptance.celery_fixtures import REDIS, WorkerFactory, pg_rows
from tests.acceptance.conftest import (
    ServerFactory,
    events,
    login,
    submit,
    wait_for,
    wait_progress,
)


def test_pause_resume_cancel_across_processes(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    srv = server(**services)
    assert httpx.get(f"{srv.url}/api/v1/health").json()["executor"] == "celery"
    worker()
    c = login(srv)
    tid = submit(c, "ledger", {"steps": 300, "step_ms": 5})["id"]
    wait_progress(c, tid, 20)
    assert c.post(f"/tasks/{tid}/pause").status_code == 202
    paused = wait_for(c, tid, "paused")
    at_pause = len(pg_rows(services, tid))
    assert at_pause == paused["progress"]["done"] or at_pause >= 20
    probe = submit(c, "add", {"operand1": 1, "operand2": 1})["id"]
    wait_for(c, probe, "succeeded")  # a paused task holds no worker: others run,
    assert len(pg_rows(services, tid)) == at_pause  # and it has not moved
    assert c.post(f"/tasks/{tid}/resume").status_code == 202
    assert wait_for(c, tid, "succeeded", timeout=60)["status"] == "succeeded"
    assert pg_rows(services, tid) == list(range(1, 301))  # each step exactly once
    assert [e["to_status"] for e in events(c, tid)] == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]

    doomed = submit(c, "ledger", {"steps": 2000, "step_ms": 5})["id"]
    wait_progress(c, doomed, 10)
    assert c.post(f"/tasks/{doomed}/cancel").status_code == 202
    assert wait_for(c, doomed, "cancelled")["status"] == "cancelled"
    assert pg_rows(services, doomed) == []


def test_queues_route_tasks_to_workers(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    srv = server(**services)
    worker("-Q", "render")
    c = login(srv)
    plain = submit(c, "add", {"operand1": 2, "operand2": 2})["id"]
    frames = submit(c, "render", {"frames": 3, "seconds_per_frame": 0.01})["id"]
    assert wait_for(c, frames, "succeeded")["status"] == "succeeded"
    assert c.get(f"/tasks/{plain}").json()["status"] == "queued"  # no worker on "default"
    worker("-Q", "default")
    assert wait_for(c, plain, "succeeded")["result"]["sum"] == 4


def test_worker_killed_mid_task_loses_and_duplicates_nothing(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    srv = server(**services)
    first = worker()
    c = login(srv)
    tid = submit(c, "ledger", {"steps": 400, "step_ms": 10})["id"]
    wait_progress(c, tid, 30)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    rows_at_kill = pg_rows(services, tid)
    assert rows_at_kill == list(range(1, len(rows_at_kill) + 1))
    worker()  # reaps the expired lease (3 s here) and runs it from its checkpoint
    done = wait_for(c, tid, "succeeded", timeout=90)
    assert (done["attempts"], done["recoveries"]) == (1, 1)  # the kill used no attempt
    assert pg_rows(services, tid) == list(range(1, 401))
    reasons = [e["reason"] for e in events(c, tid)]
    assert any(r.startswith("recovered after a lost worker (1 of 10)") for r in reasons), reasons


def test_lost_messages_are_republished(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    """The broker loses every queued message (this Redis keeps nothing on disk, as after
    a restart): every task still reaches a final status."""
    import redis

    srv = server(**services)
    c = login(srv)
    ids = [submit(c, "add", {"operand1": i, "operand2": 1})["id"] for i in range(200)]
    redis.Redis.from_url(REDIS).flushdb()  # all 200 messages gone
    worker()
    for task_id in ids:
        assert wait_for(c, task_id, "succeeded", timeout=90)["status"] == "succeeded"


def test_cancel_while_no_worker_runs_it_never(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    srv = server(**services)
    c = login(srv)
    tid = submit(c, "ledger", {"steps": 50, "step_ms": 1})["id"]
    assert c.post(f"/tasks/{tid}/cancel").json()["status"] == "cancelled"
    worker()  # its message is still in the queue: the claim guard must ignore it
    probe = submit(c, "add", {"operand1": 1, "operand2": 1})["id"]
    wait_for(c, probe, "succeeded")
    time.sleep(3)  # past one re-publish round
    assert c.get(f"/tasks/{tid}").json()["status"] == "cancelled"
    assert "running" not in [e["to_status"] for e in events(c, tid)]
    assert pg_rows(services, tid) == []
