"""Pipelines on the event stream of a real ``tether serve``, over the WebSocket and SSE:
a subscriber of a pipeline hears the pipeline's changes and every event of its steps'
tasks, also of the step started after it subscribed; another user is refused as for a
task of someone else."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server, ServerFactory, assert_error, login
from tests.acceptance.tasks import HOLD_STEP_FILE
from tests.acceptance.ws_helpers import Socket, reached, token_of

pytestmark = pytest.mark.timeout(180)
FLOW = ["queued", "running", "succeeded"]


@pytest.fixture
def srv(server: ServerFactory) -> Server:
    return server(workers=2)


@contextmanager
def held(srv: Server) -> Iterator[Path]:
    """Steps of type gated_step wait while the yielded file exists."""
    gate = srv.home / HOLD_STEP_FILE
    gate.touch()
    try:
        yield gate
    finally:
        gate.unlink(missing_ok=True)


def submit_two_steps(api: httpx.Client) -> dict[str, Any]:
    steps = [
        {"name": "gated_step", "order_no": n, "context": {"label": label}}
        for n, label in ((1, "first"), (2, "second"))
    ]
    body = {"pipeline_name": "two", "project": "events", "data_url": "", "transformers_list": steps}
    r = api.post("/pipelines", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def step_tasks(api: httpx.Client, pid: int) -> list[int | None]:
    r = api.get(f"/pipelines/{pid}")
    assert r.status_code == 200, r.text
    return [s["task"] for s in r.json()["steps"]]


def moves(events: list[dict[str, Any]], pid: int) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "pipeline" and e["pipeline"] == pid]


def ended(pid: int) -> Any:
    return lambda events: [e["to"] for e in moves(events, pid)][-1:] == ["succeeded"]


def test_a_pipeline_and_its_steps_over_the_websocket(srv: Server) -> None:
    with login(srv) as alice, login(srv) as bob, held(srv) as gate:
        mine = Socket.open(srv, token_of(alice))
        start = mine.ok("subscribe", tasks="mine")["upto"]
        pipeline = submit_two_steps(alice)
        pid, first = pipeline["id"], pipeline["steps"][0]["task"]
        ws = Socket.open(srv, token_of(alice))
        # since: the events of its tasks so far are replayed (its own are not)
        reply = ws.ok("subscribe", pipelines=[pid], since=start)
        assert reply["tasks"] == [] and reply["pipelines"] == [pid] and reply["upto"] >= start
        mine.events_until(reached(first, "running"), "the first step running")
        assert step_tasks(alice, pid)[1] is None  # the second step starts later
        with Socket.open(srv, token_of(bob)) as other:
            error = other.error("subscribe", "not_found", pipelines=[pid])
            assert error["message"] == f"no pipeline {pid}" and error["pipelines"] == [pid]
            other.error("subscribe", "not_found", tasks="mine", pipelines=[pid])
            other.error("subscribe", "invalid_params", pipelines=[])
            other.error("subscribe", "invalid_params", pipelines=["7"])
            other.error("unsubscribe", "invalid_params", pipelines=0)
        gate.unlink()
        ws.events_until(ended(pid), "the pipeline's success over its subscription", timeout=60)
        mine.events_until(ended(pid), "the pipeline's success over mine", timeout=60)
        second = step_tasks(alice, pid)[1]
        assert ws.ok("unsubscribe", pipelines=[pid]) == {"tasks": [], "pipelines": [pid]}
        owner = alice.get("/auth/me").json()["username"]
    assert second is not None
    assert [e["to"] for e in moves(mine.events, pid)] == FLOW
    created = moves(mine.events, pid)[0]
    assert created["from"] is None and created["tasks"] == [first] and created["id"] is None
    assert created["owner"] == owner and created["name"] == "two"
    assert isinstance(created["event"], int)
    heard = [e["to"] for e in moves(ws.events, pid)]
    assert heard == FLOW[-len(heard) :]  # live only: from when it subscribed
    for task in (first, second):
        assert [e["to"] for e in ws.statuses(task)] == FLOW
        assert {e["pipeline"] for e in ws.statuses(task)} == {pid}
        assert [e["to"] for e in mine.statuses(task)] == FLOW
    assert {e.get("task") for e in ws.events} - {None} == {first, second}
    assert any(e["kind"] == "progress" and e["task"] == second for e in ws.events)
    # a step's success goes out before the pipeline's that it caused
    last = next(e for e in ws.statuses(second) if e["to"] == "succeeded")
    assert ws.events.index(last) < ws.events.index(moves(ws.events, pid)[-1])
    for s in (mine, ws):
        s.close()


def sse_events(srv: Server, api: httpx.Client, query: str) -> Iterator[dict[str, Any]]:
    """The events of ``GET /api/v1/events?query`` as EventSource dispatches them:
    their fields, ``data`` parsed."""
    timeout = httpx.Timeout(15, read=30)
    with (
        httpx.Client(base_url=srv.url, headers=api.headers, timeout=timeout) as http,
        http.stream("GET", f"/api/v1/events?{query}") as response,
    ):
        assert response.status_code == 200, response.read()
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if "data" in fields:
                    yield {**fields, "data": json.loads(fields["data"])}
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


def test_a_pipeline_and_its_steps_over_sse(srv: Server) -> None:
    with login(srv) as alice, login(srv) as bob, held(srv) as gate:
        pid = submit_two_steps(alice)["id"]
        for query, status, code in (
            (f"pipelines={pid}", 404, "not_found"),
            (f"tasks=mine&pipelines={pid}", 404, "not_found"),
            ("pipelines=mine", 400, "invalid"),
        ):
            r = httpx.get(f"{srv.url}/api/v1/events?{query}", headers=bob.headers, timeout=15)
            assert_error(r, status, code)
        seen: list[dict[str, Any]] = []
        for e in sse_events(srv, alice, f"pipelines={pid}&since=0"):
            seen.append(e)
            if e["event"] == "status" and e["data"]["to"] == "running" and gate.exists():
                gate.unlink()  # the first step runs: let it end, and the second start
            if e["event"] == "pipeline" and e["data"]["to"] == "succeeded":
                break
        first, second = step_tasks(alice, pid)
    statuses = [e for e in seen if e["event"] == "status"]
    for task in (first, second):
        assert [e["data"]["to"] for e in statuses if e["data"]["task"] == task] == FLOW
    assert all(e["id"] == str(e["data"]["id"]) and e["data"]["pipeline"] == pid for e in statuses)
    pipelines = [e for e in seen if e["event"] == "pipeline"]
    assert pipelines and all("id" not in e and e["data"]["id"] is None for e in pipelines)
    heard = [e["data"]["to"] for e in pipelines]
    assert heard == FLOW[-len(heard) :]
