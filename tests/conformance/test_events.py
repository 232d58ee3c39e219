"""The event stream on every deployment, over real sockets to ``tether serve``: a task's
life in order, since and Last-Event-ID in the middle of a burst, tenancy, cancel over
the socket, refused sockets. On Celery deployments the transitions and progress are
committed by ``tether worker`` processes and reach the server over the broker
(tests/acceptance/ws_helpers.py reads the WebSocket)."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from typing import Any

import httpx

from tests.acceptance.conftest import submit, wait_for
from tests.acceptance.ws_helpers import (
    Socket,
    all_reached,
    closed,
    raw_connect,
    reached,
    token_of,
)
from tests.conformance.conftest import FINAL, Deployment

LIFE = ["queued", "running", "pausing", "paused", "queued", "running", "succeeded"]


def history_ids(client: httpx.Client, task_id: int) -> list[int]:
    r = client.get(f"/tasks/{task_id}/events")
    assert r.status_code == 200, r.text
    return [e["id"] for e in r.json()]


def test_a_subscriber_sees_a_task_life_in_order(deployment: Deployment, api: httpx.Client) -> None:
    with Socket.open(deployment.server, token_of(api)) as ws:
        ws.ok("subscribe", tasks="mine")
        task = ws.ok("submit", task_type="countdown", params={"seconds": 1.5, "tick_ms": 5})
        tid = task["id"]
        ws.events_until(
            lambda events: any(e["kind"] == "progress" and e["task"] == tid for e in events),
            "a progress event of the running task",
        )
        assert ws.ok("pause", task=tid)["status"] in ("pausing", "paused")
        ws.events_until(reached(tid, "paused"), "paused")
        ws.ok("resume", task=tid)
        ws.events_until(reached(tid, "succeeded"), "succeeded", timeout=60)

    life = ws.statuses(tid)
    assert [e["to"] for e in life] == LIFE, life
    assert [e["from"] for e in life] == [None, *LIFE[:-1]]
    assert [e["id"] for e in life] == history_ids(api, tid)  # in id order, as stored
    assert {e["owner"] for e in ws.events} == {task["owner"]}
    assert {e["task_type"] for e in ws.events} == {"countdown"}
    # progress (which only the worker that runs the task knows) between running and
    # pausing, and again after the resume, counting up
    order = [(e["kind"], e.get("to")) for e in ws.events]
    first_progress = order.index(("progress", None))
    assert order.index(("status", "running")) < first_progress < order.index(("status", "pausing"))
    done = [e["progress"]["done"] for e in ws.events if e["kind"] == "progress"]
    assert done == sorted(done), done


def test_since_resumes_in_a_burst_of_500_without_gap_or_duplicate(
    deployment: Deployment, api: httpx.Client
) -> None:
    """One socket follows from the start; another leaves in the middle of a burst of
    600 transitions (200 tasks: queued, running, succeeded), and comes back with since:
    it gets exactly the rest, replayed then live."""
    token = token_of(api)
    whole = Socket.open(deployment.server, token)
    part = Socket.open(deployment.server, token)
    try:
        whole.ok("subscribe", tasks="mine", since=0)
        start = part.ok("subscribe", tasks="mine")["upto"]

        def burst(n: int) -> list[int]:
            with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=30) as c:
                ids = []
                for i in range(n):
                    r = c.post(
                        "/tasks", json={"type": "add", "params": {"operand1": i, "operand2": 1}}
                    )
                    assert r.status_code == 201, r.text
                    ids.append(r.json()["id"])
                return ids

        first: list[int] = []
        submitter = threading.Thread(target=lambda: first.extend(burst(150)))
        submitter.start()
        part.events_until(lambda ev: len([e for e in ev if e["kind"] == "status"]) >= 100, "100")
        part.close()
        last = part.statuses()[-1]["id"]
        whole.events_until(
            lambda ev: any(e["kind"] == "status" and e["id"] >= last + 100 for e in ev),
            "100 more events while the second socket is away",
        )
        again = Socket.open(deployment.server, token)
        upto = again.ok("subscribe", tasks="mine", since=last)["upto"]
        assert upto >= last + 100  # what it missed is replayed from the history
        submitter.join(120)
        tasks = first + burst(50)  # and more arrives live
        whole.events_until(all_reached(tasks, "succeeded"), "every task succeeded", timeout=90)
        final = whole.statuses()[-1]["id"]
        again.events_until(
            lambda ev: any(e["kind"] == "status" and e["id"] == final for e in ev), "the last"
        )
        again.close()
    finally:
        whole.close()

    everything = [e["id"] for e in whole.statuses()]
    assert everything == sorted(set(everything))  # in order, none twice
    expected = sorted(i for t in tasks for i in history_ids(api, t))
    assert everything == expected  # none missed
    assert len(everything) == 600
    seen = [e["id"] for e in part.statuses()] + [e["id"] for e in again.statuses()]
    assert seen == [i for i in everything if i > start]
    assert any(i > upto for i in seen)  # live ones after the replay


def test_another_users_events_never_arrive(deployment: Deployment, api: httpx.Client) -> None:
    with deployment.login() as alice:
        alices = [submit(alice, "countdown", {"seconds": 0.3})["id"] for _ in range(3)]
        with Socket.open(deployment.server, token_of(api)) as ws:
            ws.error("subscribe", "not_found", tasks=[alices[0]])
            ws.error("subscribe", "permission_denied", tasks="all")
            ws.error("pause", "not_found", task=alices[1])
            ws.ok("subscribe", tasks="mine", since=0)
            # alice's tasks run (in worker processes on Celery) while this socket
            # listens; then one of this user's own, whose events come after theirs
            for tid in alices:
                assert wait_for(alice, tid, FINAL)["status"] == "succeeded"
            mine = ws.ok("submit", task_type="countdown", params={"seconds": 0.2})
            ws.events_until(reached(mine["id"], "succeeded"), "this user's task succeeded")
    assert {e["task"] for e in ws.events} == {mine["id"]}
    assert {e["owner"] for e in ws.events} == {mine["owner"]}


def test_cancel_over_the_socket_and_sockets_refused(
    deployment: Deployment, api: httpx.Client
) -> None:
    with Socket.open(deployment.server, token_of(api)) as ws:
        tid = ws.ok("submit", task_type="countdown", params={"seconds": 600, "tick_ms": 20})["id"]
        ws.ok("subscribe", tasks=[tid], since=0)
        ws.events_until(reached(tid, "running"), "running")
        assert ws.ok("cancel", task=tid)["status"] in ("cancelling", "cancelled")
        ws.events_until(reached(tid, "cancelled"), "cancelled")
    assert [e["to"] for e in ws.statuses(tid)] == ["queued", "running", "cancelling", "cancelled"]
    srv = deployment.server
    assert closed(raw_connect(srv, {"Authorization": "Token not-a-token"}))[0] == 4401
    headers = {"Authorization": f"Token {token_of(api)}", "Origin": "http://evil.example"}
    assert closed(raw_connect(srv, headers))[0] == 4403


def sse_statuses(api: httpx.Client, **headers: str) -> Generator[dict[str, Any], None, None]:
    """The status events of GET /events?tasks=mine&since=0, as EventSource reads them
    (a Last-Event-ID header wins over the URL's since)."""
    with api.stream("GET", "/events?tasks=mine&since=0", headers=headers, timeout=30) as r:
        assert r.status_code == 200, r.read()
        fields: dict[str, str] = {}
        for line in r.iter_lines():
            if line == "":
                if fields.get("event") == "status":
                    event = json.loads(fields["data"])
                    assert fields["id"] == str(event["id"])
                    yield event
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")


def test_sse_resumes_with_last_event_id(deployment: Deployment, api: httpx.Client) -> None:
    tasks = [submit(api, "add", {"operand1": i, "operand2": 1})["id"] for i in range(30)]
    got: list[dict[str, Any]] = []
    first = sse_statuses(api)
    for event in first:
        got.append(event)
        if len(got) == 40:
            break
    first.close()
    finished = {e["task"] for e in got if e["to"] == "succeeded"}
    for event in sse_statuses(api, **{"Last-Event-ID": str(got[-1]["id"])}):
        got.append(event)
        if event["to"] == "succeeded":
            finished.add(event["task"])
            if len(finished) == len(tasks):
                break
    ids = [e["id"] for e in got]
    assert ids == sorted(set(ids))  # in order, none twice
    assert ids == sorted(i for t in tasks for i in history_ids(api, t))  # none missed
