"""Acceptance: the real ``tether serve`` over real HTTP (see conftest.py)."""

from __future__ import annotations

import secrets
import socket
import time
from typing import Any

import httpx

from tests.acceptance.conftest import (
    PASSWORD,
    ServerFactory,
    assert_error,
    assert_event_chain,
    events,
    free_port,
    get_task,
    login,
    run_tether,
    submit,
    wait_for,
    wait_progress,
    wait_until,
)

FINAL = ("succeeded", "failed", "cancelled")


def task_count(client: httpx.Client) -> int:
    r = client.get("/tasks")
    assert r.status_code == 200, r.text
    return int(r.json()["count"])


def test_new_user_flow_pause_resume(server: ServerFactory) -> None:
    srv = server()
    with login(srv, "alice") as c:
        r = c.get("/task-types")
        assert r.status_code == 200, r.text
        types = {t["name"]: t for t in r.json()}
        for name in ("countdown", "fibonacci", "add", "render"):
            schema = types[name]["params_schema"]
            assert schema["type"] == "object" and schema["properties"], types[name]
        assert "seconds" in types["countdown"]["params_schema"]["properties"]

        task = submit(c, "countdown", {"seconds": 2})
        assert task["status"] == "queued" and task["owner"] == "alice"
        assert task["params"]["seconds"] == 2
        tid = task["id"]
        wait_progress(c, tid, 10)

        r = c.post(f"/tasks/{tid}/pause")
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("pausing", "paused")
        paused = wait_for(c, tid, "paused", timeout=15)
        at_pause = paused["progress"]["done"]
        assert 0 < at_pause < paused["progress"]["total"], paused
        assert paused["paused_at"]

        # a paused task holds no worker: another task runs to the end meanwhile, and the
        # paused one has not moved
        probe = submit(c, "add", {"operand1": 1, "operand2": 2})["id"]
        assert wait_for(c, probe, "succeeded")["result"]["sum"] == 3
        still = get_task(c, tid)
        assert still["status"] == "paused"
        assert still["progress"]["done"] == at_pause

        r = c.post(f"/tasks/{tid}/resume")
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("queued", "running")
        seen = []
        deadline = time.monotonic() + 30
        while True:
            task = get_task(c, tid)
            seen.append(task["progress"]["done"])
            assert task["progress"]["done"] >= at_pause, (at_pause, seen)
            if task["status"] in FINAL or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert task["status"] == "succeeded", task
        assert task["result"] == {"seconds": 2, "ticks": 200}
        assert task["progress"]["done"] == task["progress"]["total"] == 200
        assert task["finished_at"]

        history = events(c, tid)
        assert [e["to_status"] for e in history] == [
            "queued",
            "running",
            "pausing",
            "paused",
            "queued",
            "running",
            "succeeded",
        ]
        assert_event_chain(history)
        by_move = {(e["from_status"], e["to_status"]): e for e in history}
        assert by_move[("running", "pausing")]["actor"] == "user:alice"
        assert by_move[("paused", "queued")]["actor"] == "user:alice"


def test_cancel_render_rolls_back_frames(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as c:
        tid = submit(c, "render", {"frames": 50, "seconds_per_frame": 0.05})["id"]
        wait_progress(c, tid, 3)
        frames_dir = srv.home / "renders" / f"task-{tid}"
        assert len(list(frames_dir.glob("frame_*.ppm"))) >= 3

        r = c.post(f"/tasks/{tid}/cancel")
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("cancelling", "cancelled")
        task = wait_for(c, tid, FINAL)
        assert task["status"] == "cancelled", task
        assert not frames_dir.exists()
        history = events(c, tid)
        assert [e["to_status"] for e in history][-2:] == ["cancelling", "cancelled"]
        assert history[-2]["from_status"] in ("running", "pausing")


def test_cancel_ledger_deletes_its_rows(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as c:
        keep = submit(c, "ledger", {"steps": 5, "step_ms": 0})["id"]
        assert wait_for(c, keep, FINAL)["status"] == "succeeded"
        tid = submit(c, "ledger", {"steps": 5000, "step_ms": 5})["id"]
        wait_progress(c, tid, 10)
        assert len(srv.ledger_rows(tid)) >= 10

        r = c.post(f"/tasks/{tid}/cancel")
        assert r.status_code == 202, r.text
        task = wait_for(c, tid, FINAL)
        assert task["status"] == "cancelled", task
        assert srv.ledger_rows(tid) == []
        assert srv.ledger_rows(keep) == [1, 2, 3, 4, 5]  # other tasks' rows untouched


def test_cancel_with_slow_rollback_that_reports_progress(server: ServerFactory) -> None:
    """A rollback may take longer than one maintenance round and call ctx.progress
    (runner.py: "rollback code may report progress freely"); it must still finish."""
    srv = server()
    gate = srv.home / "hold-rollback"
    gate.touch()
    with login(srv) as c:
        tid = submit(c, "ledger", {"steps": 5000, "step_ms": 5, "hold_rollback": True})["id"]
        wait_progress(c, tid, 5)
        r = c.post(f"/tasks/{tid}/cancel")
        assert r.status_code == 202, r.text
        wait_for(c, tid, "cancelling")
        leases = [srv.lease_of(tid)]
        for rounds in (1, 2):  # the rollback outlives a few maintenance rounds
            wait_until(
                lambda: srv.lease_of(tid) != leases[-1],
                f"maintenance round {rounds} to renew the rollback's lease",
            )
            leases.append(srv.lease_of(tid))
        assert get_task(c, tid)["status"] == "cancelling"
        assert srv.ledger_rows(tid)
        gate.unlink()
        task = wait_for(c, tid, FINAL, timeout=20)
        assert task["status"] == "cancelled", task
        assert srv.ledger_rows(tid) == []


def test_retries(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as c:
        fid = submit(c, "flaky", {})["id"]
        aid = submit(c, "always_fails", {})["id"]

        flaky = wait_for(c, fid, FINAL)
        assert flaky["status"] == "succeeded", flaky
        assert flaky["attempts"] == 2
        assert flaky["result"] == {"attempt": 2}
        retries = [e for e in events(c, fid) if "retry" in e["reason"]]
        assert len(retries) == 1, events(c, fid)
        assert (retries[0]["from_status"], retries[0]["to_status"]) == ("running", "queued")
        assert "flaky failure on attempt 1" in retries[0]["reason"]

        failed = wait_for(c, aid, FINAL)
        assert failed["status"] == "failed", failed
        assert failed["attempts"] == failed["max_attempts"] == 2
        assert "always fails (attempt 2)" in failed["error"]
        history = events(c, aid)
        assert [e["to_status"] for e in history] == [
            "queued",
            "running",
            "queued",
            "running",
            "failed",
        ]
        assert "retry" in history[2]["reason"]

        assert c.get("/health").status_code == 200
        assert (
            wait_for(c, submit(c, "add", {"operand1": 2, "operand2": 3})["id"], FINAL)["result"][
                "sum"
            ]
            == 5
        )


def test_bad_input_is_rejected_and_creates_nothing(server: ServerFactory) -> None:
    srv = server()
    with login(srv, "bob") as c:
        finished = submit(c, "add", {"operand1": 1, "operand2": 2})["id"]
        assert wait_for(c, finished, FINAL)["status"] == "succeeded"
        running = submit(c, "countdown", {"seconds": 60})["id"]
        wait_for(c, running, "running")
        before = task_count(c)

        err = assert_error(c.post("/tasks", json={"type": "no-such-type", "params": {}}), 400)
        assert "no-such-type" in err["message"]
        err = assert_error(
            c.post("/tasks", json={"type": "countdown", "params": {"seconds": -1}}), 400
        )
        assert "seconds" in err["message"]
        err = assert_error(
            c.post("/tasks", json={"type": "fibonacci", "params": {"n": 10**9}}), 400
        )
        assert "params.n" in err["message"]
        assert_error(
            c.post(
                "/tasks",
                content=b'{"type": "add", "params": {',
                headers={"Content-Type": "application/json"},
            ),
            400,
        )

        body = {"type": "add", "params": {"operand1": 1, "operand2": 1}}
        with srv.client() as anon:
            assert_error(anon.post("/tasks", json=body), 401)
            assert_error(anon.get("/tasks"), 401)
        with srv.client("garbage-token") as garbage:
            assert_error(garbage.post("/tasks", json=body), 401)
            assert_error(garbage.get(f"/tasks/{finished}"), 401)
        with srv.client() as anon:
            r = anon.post("/auth/token", json={"username": "bob", "password": PASSWORD})
            assert r.status_code == 200, r.text
        with srv.client(r.json()["token"]) as second:
            assert second.get("/tasks").status_code == 200
            assert second.post("/auth/logout").status_code == 204
            assert_error(second.get("/tasks"), 401)
            assert_error(second.post("/tasks", json=body), 401)
        assert c.get("/tasks").status_code == 200  # only the revoked token stopped working

        history = events(c, finished)
        for action in ("pause", "resume", "cancel"):
            err = assert_error(c.post(f"/tasks/{finished}/{action}"), 409)
            assert err["status"] == "succeeded", err
        assert events(c, finished) == history
        err = assert_error(c.post(f"/tasks/{running}/resume"), 409)
        assert err["status"] == "running", err
        assert get_task(c, running)["status"] == "running"

        assert_error(c.get("/no-such-endpoint"), 404)
        assert_error(c.get("/tasks/987654"), 404)
        with srv.client() as anon:
            assert_error(anon.get("/no-such-endpoint"), 404)

        assert task_count(c) == before
        assert c.post(f"/tasks/{running}/cancel").status_code == 202
        assert wait_for(c, running, FINAL)["status"] == "cancelled"


def test_tenancy(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as a, login(srv) as b:
        tid = submit(a, "countdown", {"seconds": 60})["id"]
        wait_for(a, tid, "running")
        for method, path in [
            ("GET", f"/tasks/{tid}"),
            ("GET", f"/tasks/{tid}/events"),
            ("POST", f"/tasks/{tid}/pause"),
            ("POST", f"/tasks/{tid}/resume"),
            ("POST", f"/tasks/{tid}/cancel"),
        ]:
            assert_error(b.request(method, path), 404, "not_found")
        listing = b.get("/tasks").json()
        assert listing["count"] == 0 and listing["results"] == []
        assert tid in [t["id"] for t in a.get("/tasks").json()["results"]]

        assert get_task(a, tid)["status"] == "running"  # B's requests changed nothing
        assert [e["to_status"] for e in events(a, tid)] == ["queued", "running"]
        assert a.post(f"/tasks/{tid}/cancel").status_code == 202
        assert wait_for(a, tid, FINAL)["status"] == "cancelled"


def test_pause_expiry_cancels(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as c:
        task = submit(c, "countdown", {"seconds": 60}, pause_timeout=1)
        assert task["pause_timeout"] == 1
        tid = task["id"]
        wait_progress(c, tid, 1)
        assert c.post(f"/tasks/{tid}/pause").status_code == 202
        wait_for(c, tid, ("paused", "cancelling", "cancelled"))
        task = wait_for(c, tid, FINAL, timeout=20)
        assert task["status"] == "cancelled", task
        expired = [e for e in events(c, tid) if e["reason"] == "pause_expired"]
        assert [(e["from_status"], e["to_status"]) for e in expired] == [("paused", "cancelling")]


def test_auth_rate_is_configurable(server: ServerFactory) -> None:
    """README: login and registration are rate-limited per client (TETHER_AUTH_RATE)."""
    srv = server(workers=1, TETHER_AUTH_RATE="3/min")
    creds = {"username": "carol", "password": PASSWORD}
    with srv.client() as anon:
        assert anon.post("/auth/register", json=creds).status_code == 201
        for _ in range(2):
            assert anon.post("/auth/token", json=creds).status_code == 200
        assert_error(anon.post("/auth/token", json=creds), 429)


def test_check_deploy_is_clean(tmp_path: Any) -> None:
    home = tmp_path / "deploy-home"
    home.mkdir()
    r = run_tether(
        home,
        "manage",
        "check",
        "--deploy",
        TETHER_PRODUCTION="1",
        TETHER_SECRET_KEY=secrets.token_urlsafe(64),
        TETHER_ALLOWED_HOSTS="example.com",
    )
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    assert "no issues" in output, output


def test_serve_refuses_busy_port(tmp_path: Any) -> None:
    home = tmp_path / "busy-port"
    home.mkdir()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_tether(home, "serve", "--port", str(port), "--workers", "1", timeout=30)
    assert r.returncode != 0, r
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert len(err.splitlines()) == 1, err
    assert str(port) in err


def test_serve_refuses_second_server_on_same_home(server: ServerFactory) -> None:
    srv = server(workers=1)
    r = run_tether(srv.home, "serve", "--port", str(free_port()), "--workers", "1", timeout=30)
    assert r.returncode != 0, r
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert len(err.splitlines()) == 1, err
    assert "TETHER_HOME" in err
    assert httpx.get(f"{srv.url}/api/v1/health").status_code == 200


def test_docs_admin_and_schema_over_http(server: ServerFactory) -> None:
    """Pages that set cookies (CSRF) must survive the real HTTP server."""
    srv = server(workers=1)
    with httpx.Client(base_url=srv.url, timeout=10) as http:
        docs = http.get("/docs/")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        bundle = http.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
        assert bundle.status_code == 200  # served locally: works with no internet
        login = http.get("/admin/login/")
        assert login.status_code == 200 and "csrftoken" in login.headers.get("set-cookie", "")
        schema = http.get("/api/schema/", headers={"Accept": "application/json"})
        assert schema.status_code == 200 and "/api/v1/tasks" in schema.json()["paths"]
