"""Acceptance: the ``tether pipeline …`` and ``tether pipelines`` commands (real
subprocesses) against a real ``tether serve``; the steps are the ``ledger`` test type
(a control point per row, a rollback)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.cli_helpers import Cli
from tests.acceptance.conftest import TETHER, ServerFactory, wait_until
from tests.acceptance.proxy import proxy

pytestmark = pytest.mark.timeout(300)  # several pipelines and CLI runs each


def document(first: dict[str, Any], second: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """Two orders of one ``ledger`` step each."""
    return {
        "pipeline_name": "two_orders",
        "data_url": "",
        "project": "acc",
        "transformers_list": [
            {"name": "ledger", "order_no": 1, "context": first},
            {"name": "ledger", "order_no": 2, "context": second},
        ],
        **extra,
    }


def write(path: Path, doc: Any) -> str:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def read(api: httpx.Client, pipeline_id: int) -> dict[str, Any]:
    r = api.get(f"/pipelines/{pipeline_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_pipeline(
    api: httpx.Client, pipeline_id: int, check: Any, what: str, timeout: float = 60.0
) -> dict[str, Any]:
    return dict(
        wait_until(
            lambda: (lambda p: p if check(p) else None)(read(api, pipeline_id)),
            f"pipeline {pipeline_id}: {what}",
            timeout,
        )
    )


def subscribers(url: str) -> int:
    return int(httpx.get(f"{url}/api/v1/health", timeout=5).json()["event_subscribers"])


def step_running(index: int) -> Any:
    def check(p: dict[str, Any]) -> bool:
        s = p["steps"][index]
        return s["status"] == "running" and (s["progress"] or {}).get("done", 0) >= 2

    return check


def test_run_watch_show_and_list(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("pia")
    quick = write(tmp_path / "quick.json", document({"steps": 3}, {"steps": 4}))
    r = cli.run("pipeline", "run", quick, "--watch", timeout=120)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    pid = int(lines[0])
    assert lines[1] in (f"pipeline {pid} (two_orders): {s}" for s in ("queued", "running"))
    assert any(x.startswith("step 1/ledger (task ") and x.endswith(": succeeded") for x in lines)
    assert any(x.startswith("step 2/ledger (task ") and x.endswith(": succeeded") for x in lines)
    first = next(i for i, x in enumerate(lines) if x.startswith("step 1/ledger"))
    second = next(i for i, x in enumerate(lines) if x.startswith("step 2/ledger"))
    assert first < second, lines
    assert lines[-1].startswith(f"pipeline {pid} (two_orders): succeeded"), lines
    assert "\x1b[" not in r.stdout and "polling" not in r.stderr, r
    assert r.stderr.startswith(f"pipeline {pid} (two_orders): queued, 2 steps in 2 orders"), r

    shown = cli.ok("pipeline", "show", str(pid))
    assert "status:        succeeded" in shown and "project:       acc" in shown, shown
    rows = [line for line in shown.splitlines() if "│ ledger" in line]
    assert len(rows) == 2 and all("succeeded" in x and "100%" in x for x in rows), shown
    as_json = cli.json("pipeline", "show", str(pid))
    assert [s["status"] for s in as_json["steps"]] == ["succeeded", "succeeded"]

    # --json prints the pipeline; with --watch the final one
    again = cli.json("pipeline", "run", quick)
    assert again["status"] in ("queued", "running") and len(again["steps"]) == 2
    other = write(tmp_path / "other.json", document({"steps": 1}, {"steps": 1}, project="zz"))
    r = cli.run("pipeline", "run", other, "--watch", "--json", timeout=120)
    assert r.returncode == 0, r
    watched = json.loads(r.stdout)
    assert watched["status"] == "succeeded" and watched["project"] == "zz"

    listed = cli.json("pipelines")
    assert [p["id"] for p in listed] == [watched["id"], again["id"], pid]
    assert [p["id"] for p in cli.json("pipelines", "--project", "zz")] == [watched["id"]]
    assert cli.json("pipelines", "--status", "failed") == []
    table = cli.ok("pipelines", "--project", "acc")
    assert f"│ {pid} " in table and "two_orders" in table and f"│ {watched['id']} " not in table
    r = cli.run("pipelines", "--status", "bogus")
    assert r.returncode == 1 and "unknown status 'bogus'" in r.stderr, r


def test_watch_on_a_terminal_follows_the_stream(server: ServerFactory, tmp_path: Path) -> None:
    """A bar per step, live from the stream: the pipeline is read when watching starts,
    once subscribed, when order 2 starts and at the end (polling every 0.3 s for these
    4 s would read it a dozen times). Without a stream it polls and says so."""
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("pat")
    slow = write(tmp_path / "slow.json", document(*[{"steps": 20, "step_ms": 100}] * 2))
    with proxy(cli.server.port) as p:
        via = {"TETHER_SERVER": p.url, "TETHER_TOKEN": cli.token()}
        code, output = cli.run_in_pty("pipeline", "run", slow, "--watch", timeout=120, **via)
        assert code == 0, output
        watched_id = int(output.split()[0])
        assert "1/ledger" in output and "2/ledger" in output and "━" in output, output
        assert "%" in output and f"pipeline {watched_id} (two_orders): succeeded" in output
        assert p.seen("GET", f"/api/v1/pipelines/{watched_id}") <= 6, p.requests
        assert p.seen("GET", "/ws/v1") == 1, p.requests

    # a server without the stream (a proxy that refuses WebSockets) is polled, once said
    quick = write(tmp_path / "quick.json", document({"steps": 2}, {"steps": 2}))
    with proxy(cli.server.port, refuse_websockets=True) as p:
        via = {"TETHER_SERVER": p.url, "TETHER_TOKEN": cli.token()}
        r = cli.run("pipeline", "run", quick, "--watch", timeout=120, **via)
        assert r.returncode == 0 and "(two_orders): succeeded {" in r.stdout.splitlines()[-1], r
        assert r.stderr.count("polling every 0.3s instead") == 1, r


def test_pause_resume_cancel_and_refusals(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("quinn")
    long = write(tmp_path / "long.json", document({"steps": 2}, {"steps": 5000, "step_ms": 20}))
    pid = int(cli.ok("pipeline", "run", long).strip())
    watcher = subprocess.Popen(
        [str(TETHER), "pipeline", "watch", str(pid)], env=cli.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with cli.server.client(cli.token()) as api:
        try:
            wait_until(lambda: subscribers(cli.server.url) >= 1, "the watcher to subscribe")
            wait_pipeline(api, pid, step_running(1), "step 2 running")
            out = cli.ok("pipeline", "pause", str(pid), "--reason", "lunch").strip()
            assert out in (f"pipeline {pid}: pausing", f"pipeline {pid}: paused"), out
            wait_pipeline(api, pid, lambda p: p["status"] == "paused", "paused")
            r = cli.run("pipeline", "pause", str(pid))
            assert r.returncode == 1, r
            assert r.stderr == f"tether: pipeline {pid}: cannot pause a pipeline that is paused\n"
            r = cli.run("pipeline", "retry", str(pid))
            assert r.returncode == 1 and "cannot retry a pipeline that is paused" in r.stderr, r

            assert cli.ok("pipeline", "resume", str(pid)).startswith(f"pipeline {pid}: ")
            wait_pipeline(api, pid, step_running(1), "step 2 running again")
            assert cli.ok("pipeline", "cancel", str(pid)).startswith(f"pipeline {pid}: cancel")
            watched, err = watcher.communicate(timeout=120)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        final = read(api, pid)
    assert final["status"] == "cancelled" and final["steps"][0]["rolled_back_at"], final
    assert watcher.returncode == 1, (watched, err)
    lines = watched.splitlines()
    assert f"pipeline {pid}: pausing (lunch)" in lines, lines
    assert any(x.startswith(f"pipeline {pid}: paused") for x in lines), lines
    assert any(x.startswith("step 2/ledger (task ") and ": paused" in x for x in lines), lines
    assert any(x.startswith("step 1/ledger (task ") and x.endswith(": rolled back") for x in lines)
    assert lines[-1].startswith(f"pipeline {pid} (two_orders): cancelled"), lines
    r = cli.run("pipeline", "resume", str(pid))
    assert r.returncode == 1 and "cannot resume a pipeline that is cancelled" in r.stderr, r

    for args in (("show", "999999"), ("pause", "999999"), ("watch", "999999")):
        r = cli.run("pipeline", *args)
        assert r.returncode == 1 and r.stderr == "tether: pipeline 999999 not found\n", r


def test_ctrl_c_stops_watching_not_the_pipeline(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("rita")
    long = write(tmp_path / "long.json", document({"steps": 5000, "step_ms": 20}, {"steps": 1}))
    watcher = subprocess.Popen(
        [str(TETHER), "pipeline", "run", long, "--watch"], env=cli.env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watcher.stdout is not None
    pid = int(watcher.stdout.readline())
    with cli.server.client(cli.token()) as api:
        try:
            wait_pipeline(api, pid, step_running(0), "step 1 running")
            wait_until(lambda: subscribers(cli.server.url) >= 1, "the watcher to subscribe")
            watcher.send_signal(signal.SIGINT)
            _, err = watcher.communicate(timeout=60)
        finally:
            if watcher.poll() is None:
                watcher.kill()
                watcher.communicate()
        assert watcher.returncode == 130, err
        assert f"stopped watching; pipeline {pid} keeps going" in err, err
        assert read(api, pid)["status"] == "running"
    cli.ok("pipeline", "cancel", str(pid))


def test_bad_files_and_bad_documents(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("sam")
    files = {
        "missing": (str(tmp_path / "missing.json"), "cannot read pipeline file"),
        "not json": (write(tmp_path / "bad.json", '{"pipeline_name": '), "is not valid JSON"),
        "a list": (write(tmp_path / "list.json", "[1]"), "must hold a JSON object"),
        "a key twice": (
            write(tmp_path / "twice.json", '{"project": "a", "project": "b"}'),
            "duplicate key 'project'",
        ),
    }
    for what, (path, message) in files.items():
        r = cli.run("pipeline", "run", path, "--watch")
        assert r.returncode == 2 and message in r.stderr, (what, r)
        assert r.stderr.count("\n") == 1 and r.stdout == "", (what, r)

    bad_step = document({"steps": 2}, {"steps": "many"})
    unknown = {**document({"steps": 1}, {}), "transformers_list": [{"name": "nope", "order_no": 1}]}
    documents = {
        "bad context": (bad_step, "transformers_list[1].context.steps"),
        "unknown type": (unknown, "transformers_list[0]"),
        "no steps": ({"pipeline_name": "x", "transformers_list": []}, "transformers_list"),
        "negative order": (
            {"pipeline_name": "x", "transformers_list": [{"name": "ledger", "order_no": -1}]},
            "transformers_list[0].order_no",
        ),
    }
    for what, (doc, field) in documents.items():
        r = cli.run("pipeline", "run", write(tmp_path / "doc.json", doc))
        assert r.returncode == 1 and field in r.stderr, (what, r)
        assert r.stderr.startswith("tether: ") and r.stderr.count("\n") == 1, (what, r)
        assert r.stdout == "" and "Traceback" not in r.stderr, (what, r)
    assert cli.json("pipelines") == []  # nothing was created
