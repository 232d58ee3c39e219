"""The Celery executor with real processes: `tether serve` (API only) and `tether worker`
on PostgreSQL + Redis. Needs both services: skipped locally without them, failed in CI."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.acceptance.conftest import (
    TETHER,
    ServerFactory,
    events,
    login,
    server_env,
    submit,
    wait_for,
    wait_progress,
    wait_until,
)
from tests.conftest import require_port

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/12"


@pytest.fixture
def services() -> Iterator[dict[str, str]]:
    require_port("PostgreSQL", 5432)
    require_port("Redis", 6379)
    name = f"tether_acc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    yield {"TETHER_DATABASE_URL": f"{PG}/{name}", "TETHER_BROKER_URL": REDIS,
           "TETHER_LEASE_SECONDS": "3", "TETHER_REPUBLISH_SECONDS": "2"}
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


WorkerFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def worker(tmp_path: Path, services: dict[str, str]) -> Iterator[WorkerFactory]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(procs) + 1}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(TETHER), "worker", "-c", "2", *args], cwd=tmp_path,
                                    env=server_env(tmp_path, **services), stdout=out,
                                    stderr=subprocess.STDOUT)
        procs.append(proc)
        wait_until(lambda: "ready." in log.read_text(errors="replace")
                   or proc.poll() is not None, "worker ready", timeout=30)
        assert proc.poll() is None, log.read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def pg_rows(services: dict[str, str], task_id: int) -> list[int]:
    with psycopg.connect(services["TETHER_DATABASE_URL"]) as conn:
        exists = conn.execute("SELECT to_regclass('acc_ledger')").fetchone()
        if not exists or exists[0] is None:
            return []
        rows = conn.execute("SELECT step FROM acc_ledger WHERE task_id = %s ORDER BY step",
                            [task_id]).fetchall()
    return [r[0] for r in rows]


def test_pause_resume_cancel_across_processes(server: ServerFactory, worker: WorkerFactory,
                                              services: dict[str, str]) -> None:
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
    time.sleep(0.5)
    assert len(pg_rows(services, tid)) == at_pause  # a paused task holds no worker
    assert c.post(f"/tasks/{tid}/resume").status_code == 202
    assert wait_for(c, tid, "succeeded", timeout=60)["status"] == "succeeded"
    assert pg_rows(services, tid) == list(range(1, 301))  # each step exactly once
    assert [e["to_status"] for e in events(c, tid)] == [
        "queued", "running", "pausing", "paused", "queued", "running", "succeeded"]

    doomed = submit(c, "ledger", {"steps": 2000, "step_ms": 5})["id"]
    wait_progress(c, doomed, 10)
    assert c.post(f"/tasks/{doomed}/cancel").status_code == 202
    assert wait_for(c, doomed, "cancelled")["status"] == "cancelled"
    assert pg_rows(services, doomed) == []


def test_queues_route_tasks_to_workers(server: ServerFactory, worker: WorkerFactory,
                                       services: dict[str, str]) -> None:
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
        server: ServerFactory, worker: WorkerFactory, services: dict[str, str]) -> None:
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
    assert done["attempts"] == 2
    assert pg_rows(services, tid) == list(range(1, 401))
    reasons = [e["reason"] for e in events(c, tid)]
    assert "worker lost (lease expired)" in reasons


def test_lost_messages_are_republished(server: ServerFactory, worker: WorkerFactory,
                                       services: dict[str, str]) -> None:
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


def test_cancel_while_no_worker_runs_it_never(server: ServerFactory, worker: WorkerFactory,
                                              services: dict[str, str]) -> None:
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
