"""The executor seam from outside: its system check through the real CLI, and the pause
and cancel answers of a `tether serve` whose tasks run in real `tether worker` processes
(PostgreSQL + Redis; skipped locally without them, failed in CI): the worker's settle
reaches the server on the event stream while the answer waits."""

from __future__ import annotations

from pathlib import Path

from tests.acceptance.celery_fixtures import WorkerFactory
from tests.acceptance.conftest import (
    ServerFactory,
    events,
    login,
    run_tether,
    submit,
    wait_progress,
)


def test_manage_check_reports_the_executors_problems(tmp_path: Path) -> None:
    bad = run_tether(tmp_path, "manage", "check", TETHER_EXECUTOR="celery")
    assert bad.returncode == 1
    assert "(tether.E002) TETHER_EXECUTOR=celery needs TETHER_BROKER_URL" in bad.stderr
    serve = run_tether(tmp_path, "serve", "--port", "1", TETHER_EXECUTOR="celery")
    assert serve.returncode == 2
    assert serve.stderr.strip().endswith("(tether.E002)"), serve.stderr
    good = run_tether(tmp_path, "manage", "check")
    assert good.returncode == 0 and "no issues" in good.stdout


def test_pause_and_cancel_answers_report_what_the_worker_settled(
    server: ServerFactory, worker: WorkerFactory, services: dict[str, str]
) -> None:
    # an answer may wait up to 5 s here: the settle ends the wait, however the machine runs
    srv = server(**services, TETHER_CONTROL_WAIT_MS="5000")
    worker()
    c = login(srv)
    for _ in range(3):
        tid = submit(c, "ledger", {"steps": 100_000, "step_ms": 2})["id"]
        wait_progress(c, tid, 3)
        answer = c.post(f"/tasks/{tid}/pause")
        assert answer.status_code == 202
        assert answer.json()["status"] == "paused"
        assert c.post(f"/tasks/{tid}/resume").json()["status"] == "queued"
        wait_progress(c, tid, answer.json()["progress"]["done"] + 3)
        answer = c.post(f"/tasks/{tid}/cancel")  # running: the worker rolls it back
        assert answer.status_code == 202
        assert answer.json()["status"] == "cancelled"
        assert [e["to_status"] for e in events(c, tid)][-2:] == ["cancelling", "cancelled"]
