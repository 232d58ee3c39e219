"""Acceptance: the Python client's event stream and the CLI built on it (``tether
events``, ``watch``, ``wait``) against a real server; a proxy in between shows what
they ask of the server, or plays an older server that has no WebSocket stream."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.cli_helpers import Cli
from tests.acceptance.conftest import (
    TETHER,
    ServerFactory,
    events,
    login,
    submit,
    wait_for,
    wait_until,
)
from tests.acceptance.proxy import proxy
from tests.acceptance.tasks import HOLD_STEP_FILE
from tether.client import Client, Notice

FINAL = ("succeeded", "failed", "cancelled")


def subscribers(url: str) -> int:
    return int(httpx.get(f"{url}/api/v1/health", timeout=5).json()["event_subscribers"])


def read_events_until_final(proc: subprocess.Popen[str], task_id: int) -> list[dict[str, Any]]:
    """JSON lines from ``proc`` until ``task_id`` has a final status event."""
    return read_events_until(
        proc,
        lambda e: e["kind"] == "status" and e["task"] == task_id and e["to"] in FINAL,
        f"a final event of task {task_id}",
    )


def read_events_until(
    proc: subprocess.Popen[str], last: Callable[[dict[str, Any]], bool], what: str
) -> list[dict[str, Any]]:
    """JSON lines from ``proc`` until one for which ``last`` is true."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    lines: list[dict[str, Any]] = []
    pending = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            assert proc.poll() is None, proc.communicate()
            continue
        chunk = os.read(fd, 65536)
        assert chunk, ("tether events ended", proc.communicate())
        *complete, pending = (pending + chunk).split(b"\n")
        for line in complete:
            event = json.loads(line)
            lines.append(event)
            if last(event):
                return lines
    pytest.fail(f"no {what} within 60 s: {lines}")


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C; (exit code, stderr)."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_events_prints_a_countdowns_events_in_order(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("hana")
    r = cli.run("events", "999999")
    assert r.returncode == 1 and r.stderr == "tether: no task 999999\n", r
    r = cli.run("events", "--all")  # staff only
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "staff" in r.stderr, r

    live = subprocess.Popen(
        [str(TETHER), "events"], env=cli.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: subscribers(cli.server.url) == 1, "tether events to subscribe")
        tid = int(cli.ok("submit", "countdown", "-p", "seconds=1.5"))
        seen = read_events_until_final(live, tid)
    finally:
        code, err = interrupt(live)
    assert code == 0 and err == "", (code, err)  # Ctrl-C ends it quietly

    with cli.server.client(cli.token()) as api:
        history = events(api, tid)
    statuses = [e for e in seen if e["kind"] == "status"]
    assert [e["to"] for e in statuses] == ["queued", "running", "succeeded"], seen
    assert [e["id"] for e in statuses] == [h["id"] for h in history]
    assert all(e["task"] == tid and e["owner"] == "hana" for e in seen), seen
    running = seen.index(statuses[1])
    progress = [e for e in seen if e["kind"] == "progress"]
    assert progress and all(running < seen.index(p) < len(seen) - 1 for p in progress), seen
    done = [p["progress"]["done"] for p in progress]
    assert done == sorted(done), seen

    # --since replays the stored history, then the stream stays open for what comes next
    replay = subprocess.Popen(
        [str(TETHER), "events", str(tid), "--since", str(history[0]["id"])], env=cli.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        again = read_events_until_final(replay, tid)
    finally:
        code, err = interrupt(replay)
    assert code == 0 and err == "", (code, err)
    assert [e["id"] for e in again] == [h["id"] for h in history[1:]], again


def test_events_follows_a_pipeline(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("gita")
    r = cli.run("events", "--pipeline", "999999")
    assert r.returncode == 1 and r.stderr == "tether: no pipeline 999999\n", r
    gate = cli.server.home / HOLD_STEP_FILE
    gate.touch()  # gated steps run until it is gone
    steps = [
        {"name": "gated_step", "order_no": n, "context": {"label": label}}
        for n, label in ((1, "first"), (2, "second"))
    ]
    body = {"pipeline_name": "two", "data_url": "", "transformers_list": steps}
    with cli.server.client(cli.token()) as api:
        created = api.post("/pipelines", json=body)
        assert created.status_code == 201, created.text
        pid, first = created.json()["id"], created.json()["steps"][0]["task"]
        live = subprocess.Popen(
            [str(TETHER), "events", "--pipeline", str(pid)], env=cli.env(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(lambda: subscribers(cli.server.url) == 1, "tether events to subscribe")
            other = int(cli.ok("submit", "add", "-p", "operand1=1", "-p", "operand2=2"))
            wait_for(api, other, "succeeded")
            gate.unlink()
            seen = read_events_until(
                live,
                lambda e: e["kind"] == "pipeline" and e["to"] == "succeeded",
                f"pipeline {pid} succeeded",
            )
        finally:
            gate.unlink(missing_ok=True)
            code, err = interrupt(live)
        assert code == 0 and err == "", (code, err)
        second = api.get(f"/pipelines/{pid}").json()["steps"][1]["task"]
    assert [e["pipeline"] for e in seen if e["kind"] == "pipeline"] == [pid], seen
    statuses = [(e["task"], e["to"]) for e in seen if e["kind"] == "status"]
    # the steps' tasks only (not the other task), the second's from its start
    assert (first, "succeeded") in statuses, seen
    assert [to for task, to in statuses if task == second] == ["queued", "running", "succeeded"], (
        seen
    )
    assert {task for task, _ in statuses} == {first, second}, seen
    assert all(e["pipeline"] == pid for e in seen if e["kind"] == "status"), seen


def test_watch_and_wait_follow_the_stream_without_polling(
    server: ServerFactory, tmp_path: Path
) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("ivan")
    with proxy(cli.server.port) as p:
        via = {"TETHER_SERVER": p.url, "TETHER_TOKEN": cli.token()}
        tid = int(cli.ok("submit", "countdown", "-p", "seconds=3"))
        code, output = cli.run_in_pty("watch", str(tid), timeout=60, **via)
        assert code == 0, output
        assert "%" in output and "━" in output and f"#{tid} countdown" in output, output
        assert f"task {tid} (countdown): succeeded" in output and "polling" not in output
        # fetched when watching starts, once more when subscribed, and when it ended:
        # 3 s of polling every 0.3 s would be ten
        assert p.seen("GET", f"/api/v1/tasks/{tid}") <= 3, p.requests
        assert p.seen("GET", "/ws/v1") == 1, p.requests

        waited = int(cli.ok("submit", "countdown", "-p", "seconds=3"))
        r = cli.run("wait", str(waited), "--timeout", "60", timeout=90, **via)
        assert r.returncode == 0 and r.stdout == f"task {waited}: succeeded\n", r
        assert r.stderr == "", r
        assert p.seen("GET", f"/api/v1/tasks/{waited}") <= 3, p.requests

        r = cli.run("submit", "countdown", "-p", "seconds=2", "--watch", timeout=90, **via)
        assert r.returncode == 0 and "succeeded" in r.stdout and r.stderr == "", r
        watched = int(r.stdout.split()[0])
        assert p.seen("GET", f"/api/v1/tasks/{watched}") <= 3, p.requests


def run_until_said(
    cli: Cli, args: list[str], via: dict[str, str], said: str, err_path: Path
) -> tuple[str, str]:
    """Run the CLI on a running task until it has said ``said`` on stderr, then cancel
    the task (args[1]) and return the CLI's stdout and stderr once it ends."""
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [str(TETHER), *args], env=cli.env(**via), stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        wait_until(lambda: err_path.read_text() == said, f"tether {args[0]} to say it polls", 60)
        cli.ok("cancel", args[1])
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err_path.read_text()


def test_without_a_stream_watch_and_wait_poll_and_say_so(
    server: ServerFactory, tmp_path: Path
) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("jack")
    with proxy(cli.server.port, refuse_websockets=True) as old_server:
        via = {"TETHER_SERVER": old_server.url, "TETHER_TOKEN": cli.token()}
        said = (
            f"tether: {old_server.url} has no event stream at /ws/v1 (HTTP 404); "
            "polling every 0.3s instead\n"
        )
        # long tasks, cancelled once the CLI has said it polls: however slowly the CLI
        # starts on a loaded machine, the task is still there to be polled
        tid = int(cli.ok("submit", "countdown", "-p", "seconds=600"))
        out, err = run_until_said(cli, ["watch", str(tid)], via, said, tmp_path / "watch.err")
        assert f"task {tid} (countdown): cancelled" in out, (out, err)
        assert err == said, err  # once
        # polled: more fetches than following the stream makes (at most 3)
        assert old_server.seen("GET", f"/api/v1/tasks/{tid}") > 3, old_server.requests

        waited = int(cli.ok("submit", "countdown", "-p", "seconds=600"))
        wait = ["wait", str(waited), "--until", "succeeded,cancelled", "--timeout", "60"]
        out, err = run_until_said(cli, wait, via, said, tmp_path / "wait.err")
        assert out == f"task {waited}: cancelled\n" and err == said, (out, err)

        r = cli.run("events", timeout=30, **via)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r
        assert "has no event stream at /ws/v1" in r.stderr and "newer server" in r.stderr, r


def test_client_events_resume_after_a_server_restart(server: ServerFactory) -> None:
    """The events() iterator outlives a restart of the server: it reconnects with the
    last status event it saw, and every status event arrives once, in order."""
    srv = server(workers=1)
    api = login(srv)
    token = str(api.headers["Authorization"]).split()[1]
    notices: list[Notice] = []
    seen: list[dict[str, Any]] = []
    task = submit(api, "countdown", {"seconds": 4})
    tid = int(task["id"])
    with Client(srv.url, token) as client:
        stream = client.events([tid], since=0, notify=lambda n, _: notices.append(n))

        def consume() -> None:
            for event in stream:
                seen.append(event)
                if event["kind"] == "status" and event["to"] in FINAL:
                    return

        reader = threading.Thread(target=consume)
        reader.start()
        wait_until(lambda: any(e["kind"] == "progress" for e in seen), "progress on the stream")
        srv.restart(same_port=True)
        reader.join(60)
        assert not reader.is_alive(), seen
    wait_for(api, tid, "succeeded")
    statuses = [e for e in seen if e["kind"] == "status"]
    history = events(api, tid)
    assert [e["id"] for e in statuses] == [h["id"] for h in history], (statuses, history)
    # the restart put it back in the queue (committed while the server stopped)
    assert [e["to"] for e in statuses].count("queued") == 2, statuses
    assert statuses[-1]["to"] == "succeeded"
    assert notices == [Notice.LOST, Notice.BACK], notices
    api.close()
