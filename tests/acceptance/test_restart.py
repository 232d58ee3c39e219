"""Acceptance: a killed (SIGKILL) or stopped (SIGTERM) server, restarted on the same
TETHER_HOME, loses nothing and does nothing twice."""

from __future__ import annotations

from typing import Any

import httpx

from tests.acceptance.conftest import (
    Server,
    ServerFactory,
    events,
    get_task,
    login,
    run_tether,
    submit,
    wait_for,
    wait_progress,
)

FINAL = ("succeeded", "failed", "cancelled")
LONG_STEPS = 400
RESTART_REASON = "recovered after a server restart"


def reconnect(srv: Server, client: httpx.Client) -> httpx.Client:
    """A client for the restarted server (new port) with the same token."""
    token = client.headers["Authorization"].split()[1]
    client.close()
    return srv.client(token)


def assert_ledger_complete(
    srv: Server, client: httpx.Client, task_id: int, steps: int
) -> dict[str, Any]:
    task = wait_for(client, task_id, FINAL, timeout=60)
    assert task["status"] == "succeeded", task  # a duplicate row would have failed it
    assert srv.ledger_rows(task_id) == list(range(1, steps + 1))
    return task


def test_sigkill_mid_run_then_restart(server: ServerFactory) -> None:
    srv = server(workers=2)
    gate = srv.home / "hold-rollback"
    gate.touch()
    c = login(srv)

    # slot 1: a task stuck in "cancelling" (its rollback waits for the gate file)
    cancelling = submit(
        c,
        "ledger",
        {"steps": 100_000, "step_ms": 5, "hold_rollback": True, "rollback_progress": False},
    )["id"]
    wait_progress(c, cancelling, 5)
    assert c.post(f"/tasks/{cancelling}/cancel").status_code == 202
    wait_for(c, cancelling, "cancelling")
    assert srv.ledger_rows(cancelling)

    # slot 2: the long ledger; then two queued tasks and one paused (while queued)
    long_id = submit(c, "ledger", {"steps": LONG_STEPS, "step_ms": 10})["id"]
    queued = [submit(c, "ledger", {"steps": 20, "step_ms": 1})["id"] for _ in range(2)]
    paused = submit(c, "ledger", {"steps": 20, "step_ms": 1})["id"]
    r = c.post(f"/tasks/{paused}/pause")
    assert r.status_code == 202 and r.json()["status"] == "paused", r.text

    wait_progress(c, long_id, 30)
    for tid in queued:
        assert get_task(c, tid)["status"] == "queued"
    assert get_task(c, cancelling)["status"] == "cancelling"
    srv.kill()

    rows_at_kill = srv.ledger_rows(long_id)
    assert 30 <= len(rows_at_kill) < LONG_STEPS, "kill the server while the ledger runs"
    assert rows_at_kill == list(range(1, len(rows_at_kill) + 1))

    srv.start()
    c = reconnect(srv, c)
    try:
        task = assert_ledger_complete(srv, c, long_id, LONG_STEPS)
        assert (task["attempts"], task["recoveries"]) == (1, 1)  # the kill used no attempt
        assert task["result"]["attempt"] == 1
        assert task["result"]["started_from"] == len(rows_at_kill)  # its last checkpoint
        recovered = [e for e in events(c, long_id) if e["reason"].startswith(RESTART_REASON)]
        assert [(e["from_status"], e["to_status"]) for e in recovered] == [("running", "queued")]

        for tid in queued:
            assert_ledger_complete(srv, c, tid, 20)

        assert get_task(c, paused)["status"] == "paused"
        assert srv.ledger_rows(paused) == []
        assert c.post(f"/tasks/{paused}/resume").status_code == 202
        assert_ledger_complete(srv, c, paused, 20)

        assert get_task(c, cancelling)["status"] == "cancelling"  # rollback resumed, held
        assert srv.ledger_rows(cancelling)
        gate.unlink()
        task = wait_for(c, cancelling, FINAL, timeout=30)
        assert task["status"] == "cancelled", task
        assert srv.ledger_rows(cancelling) == []
        to = [e["to_status"] for e in events(c, cancelling)]
        assert "running" not in to[to.index("cancelling") :], to  # never ran again
        assert c.get("/health").status_code == 200
    finally:
        c.close()


def test_sigterm_mid_run_then_restart(server: ServerFactory) -> None:
    """SIGTERM is a graceful stop: the running task is handed back ("server shutdown")
    without using up an attempt, and continues from its checkpoint after the restart."""
    srv = server(workers=1)
    c = login(srv)
    tid = submit(c, "ledger", {"steps": LONG_STEPS, "step_ms": 10})["id"]
    wait_progress(c, tid, 30)
    srv.stop()
    rows_at_stop = srv.ledger_rows(tid)
    assert 30 <= len(rows_at_stop) < LONG_STEPS

    srv.start()
    c = reconnect(srv, c)
    try:
        task = assert_ledger_complete(srv, c, tid, LONG_STEPS)
        assert task["result"]["started_from"] == len(rows_at_stop)
        history = [(e["from_status"], e["to_status"], e["reason"]) for e in events(c, tid)]
        assert ("running", "queued", "server shutdown") in history, history
        assert task["attempts"] == 1, history
    finally:
        c.close()


def test_server_killed_three_times_uses_no_attempt(server: ServerFactory) -> None:
    """Each kill -9 is a recovery (counted in ``recoveries``, with growing delays), not
    an attempt: a task with max_attempts 3 survives three kills and more."""
    kills = 3
    steps = 1000  # 10 ms each: far longer than the test needs to kill three times
    srv = server(workers=1)
    c = login(srv)
    tid = submit(c, "ledger", {"steps": steps, "step_ms": 10})["id"]
    assert get_task(c, tid)["max_attempts"] == 3
    done = 0
    for kill in range(1, kills + 1):
        done = wait_progress(c, tid, done + 20, timeout=60)["progress"]["done"]
        srv.kill()
        rows = srv.ledger_rows(tid)
        assert len(rows) < steps, "kill the server while the ledger runs"
        assert rows == list(range(1, len(rows) + 1))
        srv.start()
        c = reconnect(srv, c)
        task = get_task(c, tid)
        assert (task["attempts"], task["recoveries"]) == (1, kill), task
    try:
        task = assert_ledger_complete(srv, c, tid, steps)
        assert (task["attempts"], task["recoveries"], task["max_recoveries"]) == (1, kills, 10)
        assert task["result"]["attempt"] == 1
        recovered = [e["reason"] for e in events(c, tid) if e["reason"].startswith(RESTART_REASON)]
        assert recovered == [
            f"{RESTART_REASON} (1 of 10); runs again in 1s",
            f"{RESTART_REASON} (2 of 10); runs again in 2s",
            f"{RESTART_REASON} (3 of 10); runs again in 4s",
        ]
        token = c.headers["Authorization"].split()[1]
        shown = run_tether(
            srv.home, "show", str(tid), TETHER_SERVER=srv.url, TETHER_TOKEN=token, COLUMNS="200"
        )
        assert shown.returncode == 0, shown.stderr
        lines = [" ".join(line.split()) for line in shown.stdout.splitlines()]
        assert "attempts: 1/3" in lines and "recoveries: 3/10" in lines, shown.stdout
    finally:
        c.close()
