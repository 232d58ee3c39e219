"""Acceptance: the real ``tether`` client program (subprocesses) against a real server."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path
from typing import Any

from tests.acceptance.cli_helpers import Cli
from tests.acceptance.conftest import PASSWORD, ServerFactory, wait_for, wait_progress, wait_until


def test_account_types_logout_server_down(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    out = cli.login("carol")
    assert f"Logged in to {cli.server.url} as carol (token expires" in out
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_file.parent.stat().st_mode) == 0o700
    stored = json.loads(cli.config_file.read_text())
    assert stored["server"] == cli.server.url and stored["username"] == "carol"

    r = cli.run("login", "carol", "--password-stdin", input="wrong-password\n")
    assert r.returncode == 1 and "wrong username or password" in r.stderr, r
    r = cli.run("register", "carol", "--password-stdin", input="Another-Pass-1234\n")
    assert r.returncode == 1 and "taken" in r.stderr, r

    assert "carol" in cli.ok("whoami")
    me = cli.json("whoami")
    assert me["server"] == cli.server.url and me["username"] == "carol"
    assert me["token"]["current"] is True and me["token"]["expires_at"]

    types = {t["name"]: t for t in cli.json("types")}
    assert {"countdown", "fibonacci", "add", "render"} <= set(types)
    table = cli.ok("types")
    assert "countdown" in table and "seconds:number*" in table

    # logout revokes the token on the server; then the server goes away
    srv = cli.server
    token = cli.token()
    assert "Logged out" in cli.ok("logout")
    assert "token" not in json.loads(cli.config_file.read_text())
    with srv.client(token) as api:
        assert api.get("/tasks").status_code == 401  # revoked on the server too
    r = cli.run("ls")
    assert r.returncode == 1 and "tether login" in r.stderr, r
    r = cli.run("whoami", TETHER_TOKEN=token)
    assert r.returncode == 1 and "TETHER_TOKEN is invalid" in r.stderr, r

    srv.stop()
    for args in (("ls",), ("watch", "1"), ("submit", "countdown", "-p", "seconds=1")):
        r = cli.run(*args)
        assert r.returncode == 3, r
        assert (
            r.stderr.startswith("tether: cannot reach the Tether server at ")
            and "tether serve" in r.stderr
        ), r
        assert "Traceback" not in r.stderr and r.stdout == "", r


def test_submit_result_ls_show_history(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("dave")
    tid = int(cli.ok("submit", "fibonacci", "-p", "n=30").strip())
    assert (
        cli.ok("wait", str(tid), "--until", "succeeded", "--timeout", "20").strip()
        == f"task {tid}: succeeded"
    )
    assert cli.json("result", str(tid))["value"] == "832040"

    r = cli.run("submit", "fibonacci", "-p", "n=thirty")
    assert r.returncode == 2 and "'n'" in r.stderr and "integer" in r.stderr, r
    assert "Traceback" not in r.stderr
    r = cli.run("submit", "fibonacci", "-p", "n=-3")
    assert r.returncode == 1 and "minimum" in r.stderr, r
    r = cli.run("submit", "fibonacci", "--params", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "cannot read" in r.stderr, r

    params = tmp_path / "add.json"
    params.write_text(json.dumps({"operand1": 2}))
    added = json.loads(
        cli.ok("submit", "add", "--params", str(params), "-p", "operand2=3.5", "--json")
    )
    assert added["params"] == {"operand1": 2, "operand2": 3.5}
    slow = int(cli.ok("submit", "countdown", "-p", "seconds=30", "--pause-timeout", "60"))

    listed = cli.json("ls")
    assert [t["id"] for t in listed] == sorted((tid, added["id"], slow), reverse=True)
    running = cli.json("ls", "--status", "queued,running")
    assert [t["id"] for t in running] == [slow]
    assert [t["id"] for t in cli.json("ls", "--type", "fibonacci", "--all-pages")] == [tid]
    assert "fibonacci" in cli.ok("ls")

    r = cli.run("result", str(slow))
    assert r.returncode == 1 and "not succeeded" in r.stderr, r
    shown = cli.ok("show", str(tid))
    assert "succeeded" in shown and "832040" in shown and "attempts" in shown
    assert "queued → running" in cli.ok("history", str(tid))
    history = cli.json("history", str(tid))
    assert [e["to_status"] for e in history] == ["queued", "running", "succeeded"]

    for command in ("show", "history"):
        r = cli.run(command, "999999")
        assert r.returncode == 1 and "task 999999 not found" in r.stderr, r


def test_pause_resume_cancel_wait(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("erin")
    tid = int(cli.ok("submit", "countdown", "-p", "seconds=60"))
    with cli.server.client(cli.token()) as api:
        wait_progress(api, tid, 5)
        assert cli.ok("pause", str(tid)).strip() in (f"task {tid}: pausing", f"task {tid}: paused")
        cli.ok("wait", str(tid), "--until", "paused", "--timeout", "20")
        r = cli.run("pause", str(tid), "999999")
        assert r.returncode == 1, r
        assert f"task {tid}: cannot pause a task that is paused" in r.stderr
        assert "task 999999: not found" in r.stderr
        assert cli.ok("resume", str(tid)).startswith(f"task {tid}: ")
        r = cli.run("resume", str(tid))
        assert r.returncode == 1 and "cannot resume a task that is" in r.stderr, r
        r = cli.run("wait", str(tid), "--timeout", "0.5")
        assert r.returncode == 1 and "timed out" in r.stderr, r
        assert cli.ok("cancel", str(tid)).startswith(f"task {tid}: cancel")
    r = cli.run("wait", str(tid), "--until", "succeeded", "--timeout", "20")
    assert r.returncode == 1 and "cancelled" in r.stderr, r  # ended otherwise
    r = cli.run("wait", str(tid), "--until", "bogus")
    assert r.returncode == 2, r


def test_submit_watch_plain_and_watch_in_terminal(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("frank")
    r = cli.run("submit", "countdown", "-p", "seconds=0.5", "--watch")
    assert r.returncode == 0, r
    assert "succeeded" in r.stdout and "\x1b[" not in r.stdout, r

    tid = int(cli.ok("submit", "countdown", "-p", "seconds=6"))
    outcome: dict[str, tuple[int, str]] = {}
    watcher = threading.Thread(
        target=lambda: outcome.update(result=cli.run_in_pty("watch", str(tid), timeout=45))
    )
    watcher.start()
    with cli.server.client(cli.token()) as api:
        wait_progress(api, tid, 20)
        # through the API: a CLI starting slowly on a loaded machine could come too late
        assert api.post(f"/tasks/{tid}/pause").status_code == 202
        wait_for(api, tid, "paused", timeout=20)
        cli.ok("resume", str(tid))
    watcher.join(60)
    assert not watcher.is_alive()
    code, output = outcome["result"]
    assert code == 0, output
    assert "%" in output and "━" in output, output
    assert f"#{tid} countdown" in output
    assert f"task {tid} (countdown): succeeded" in output, output
    assert "Traceback" not in output


def test_watch_and_wait_outlast_a_server_restart(server: ServerFactory, tmp_path: Path) -> None:
    """A server restarted while the client watches (the Done-when of the datasets issue
    restarts it mid-import): watch and wait say it is gone, then go on when it is back."""
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("gina")
    tid = int(cli.ok("submit", "countdown", "-p", "seconds=60"))
    with cli.server.client(cli.token()) as api:
        wait_progress(api, tid, 2)
        cli.ok("pause", str(tid))
        wait_for(api, tid, "paused", timeout=20)
    # each client gets a token of its own, so the server shows when each has reached it
    tokens = {name: _fresh_token(cli, "gina", name) for name in ("wait", "watch")}
    outcome: dict[str, Any] = {}
    waiter = threading.Thread(
        target=lambda: outcome.update(
            wait=cli.run(
                "wait", str(tid), "--timeout", "90", timeout=120, TETHER_TOKEN=tokens["wait"]
            )
        )
    )
    watcher = threading.Thread(
        target=lambda: outcome.update(
            watch=cli.run("watch", str(tid), timeout=120, TETHER_TOKEN=tokens["watch"])
        )
    )
    waiter.start()
    watcher.start()
    with cli.server.client(cli.token()) as api:
        wait_until(
            lambda: {
                t["name"] for t in api.get("/auth/tokens").json() if t["last_used_at"]
            }.issuperset(tokens),
            "wait and watch to reach the server before it goes away",
        )
    cli.server.restart(same_port=True)
    with cli.server.client(cli.token()) as api:
        assert api.post(f"/tasks/{tid}/resume").status_code == 202
        assert api.post(f"/tasks/{tid}/cancel").status_code == 202
        wait_for(api, tid, "cancelled", timeout=30)
    waiter.join(60)
    watcher.join(60)
    assert not waiter.is_alive() and not watcher.is_alive()
    for name in ("wait", "watch"):
        r = outcome[name]
        assert r.returncode == 1, (name, r)  # the task ended otherwise (cancelled)
        assert "the server is unreachable; retrying" in r.stderr, (name, r)
        assert "the server is back" in r.stderr, (name, r)
        assert "cancelled" in r.stdout + r.stderr and "Traceback" not in r.stderr, (name, r)


def _fresh_token(cli: Cli, username: str, name: str) -> str:
    with cli.server.client() as anon:
        credentials = {"username": username, "password": PASSWORD, "name": name}
        r = anon.post("/auth/token", json=credentials)
        assert r.status_code == 200, r.text
        return str(r.json()["token"])
