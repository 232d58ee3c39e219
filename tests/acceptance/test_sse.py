"""Server-Sent Events over real HTTP from ``tether serve``: GET /api/v1/events streams a
task's life as it happens, resumes with Last-Event-ID losing and repeating nothing,
shows nobody another user's tasks, refuses bad requests with JSON errors before the
stream starts, and lets go of its subscriber when the client leaves."""

from __future__ import annotations

import json
import re
import signal
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.celery_fixtures import WorkerFactory
from tests.acceptance.conftest import (
    PASSWORD,
    Server,
    ServerFactory,
    assert_error,
    events,
    login,
    run_tether,
    submit,
    wait_for,
    wait_until,
)
from tests.conftest import require_port

READ_TIMEOUT = 30.0  # a stream that says nothing this long fails the test
BROKER = "redis://127.0.0.1:6379/9"  # no other test uses this database number


class Stream:
    """One SSE connection, read as EventSource reads it: ``events()`` yields each
    dispatched event as its fields (``id``, ``event``, ``data``, …); comments and the
    fields of events without data are kept aside."""

    def __init__(self, srv: Server, query: str, **headers: str) -> None:
        self.http = httpx.Client(
            base_url=srv.url, timeout=httpx.Timeout(15, read=READ_TIMEOUT), headers=headers
        )
        self._cm = self.http.stream("GET", f"/api/v1/events?{query}")
        self.response = self._cm.__enter__()
        assert self.response.status_code == 200, self.response.read()
        self._lines = self.response.iter_lines()
        self.comments: list[str] = []
        self.fields_only: list[dict[str, str]] = []
        self.last_event_id: str | None = None

    def events(self) -> Iterator[dict[str, Any]]:
        fields: dict[str, str] = {}
        for line in self._lines:
            if line == "":
                if "data" in fields:
                    yield {**fields, "data": json.loads(fields["data"])}
                elif fields:
                    self.fields_only.append(fields)
                fields = {}
            elif line.startswith(":"):
                self.comments.append(line)
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                if name == "id":
                    self.last_event_id = fields[name]

    def statuses(self) -> Iterator[dict[str, Any]]:
        """The data of status events (progress skipped)."""
        for e in self.events():
            if e["event"] == "status":
                yield e["data"]

    def close(self) -> None:
        self._cm.__exit__(None, None, None)
        self.http.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def token_of(client: httpx.Client) -> str:
    return str(client.headers["Authorization"]).removeprefix("Token ")


def stream(srv: Server, client: httpx.Client, query: str, **headers: str) -> Stream:
    return Stream(srv, query, Authorization=f"Token {token_of(client)}", **headers)


def subscribers(srv: Server) -> int:
    return int(httpx.get(f"{srv.url}/api/v1/health", timeout=15).json()["event_subscribers"])


def test_a_countdown_streams_from_queued_through_progress_to_succeeded(
    server: ServerFactory,
) -> None:
    srv = server()
    with login(srv) as alice, stream(srv, alice, "tasks=mine") as sse:
        assert sse.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert sse.response.headers["cache-control"] == "no-cache"
        assert sse.response.headers["x-accel-buffering"] == "no"
        task = submit(alice, "countdown", {"seconds": 1})
        seen: list[dict[str, Any]] = []
        for e in sse.events():
            assert e["data"]["task"] == task["id"], e
            seen.append(e)
            if e["data"].get("to") == "succeeded":
                break
        history = events(alice, task["id"])
    kinds = [e["event"] if e["event"] == "progress" else e["data"]["to"] for e in seen]
    assert kinds[:2] == ["queued", "running"] and kinds[-1] == "succeeded", kinds
    assert set(kinds[2:-1]) == {"progress"}, kinds
    done = [e["data"]["progress"]["done"] for e in seen if e["event"] == "progress"]
    assert done == sorted(done), done
    for e in seen:
        assert e["data"]["owner"] == task["owner"] and e["data"]["task_type"] == "countdown"
        if e["event"] == "status":
            assert e["id"] == str(e["data"]["id"]), e
        else:
            assert "id" not in e and e["data"]["id"] is None, e  # not replayable
    # the stream's status events are the task's history, with their ids
    statuses = [e["data"] for e in seen if e["event"] == "status"]
    assert [(s["id"], s["from"], s["to"]) for s in statuses] == [
        (h["id"], h["from_status"], h["to_status"]) for h in history
    ]
    # the opening: the reconnect delay, and the id the stream started after
    assert sse.fields_only[0]["retry"] == "2000"
    assert int(sse.fields_only[0]["id"]) < statuses[0]["id"]


def test_last_event_id_resumes_mid_burst_losing_and_repeating_nothing(
    server: ServerFactory,
) -> None:
    srv = server(workers=4)
    count = 170  # 3 status events each: queued, running, succeeded
    with login(srv) as alice:
        submitted: list[int] = []

        def burst() -> None:
            with srv.client(token_of(alice)) as api:
                submitted.extend(
                    submit(api, "add", {"operand1": i, "operand2": 1})["id"] for i in range(count)
                )

        sender = threading.Thread(target=burst)
        with stream(srv, alice, "tasks=mine&since=0") as first:
            sender.start()
            got: list[dict[str, Any]] = []
            for s in first.statuses():
                got.append(s)
                if len(got) == 100:
                    break
            resume_at = first.last_event_id
        assert resume_at == str(got[-1]["id"])
        # the URL's since=0 again, as EventSource reconnects: the header wins
        with stream(srv, alice, "tasks=mine&since=0", **{"Last-Event-ID": resume_at}) as second:
            finished = {g["task"] for g in got if g["to"] == "succeeded"}
            for s in second.statuses():
                got.append(s)
                if s["to"] == "succeeded":
                    finished.add(s["task"])
                    if len(finished) == count:
                        break
        sender.join(60)
        assert len(submitted) == count
        expected = sorted(h["id"] for t in submitted for h in events(alice, t))
    ids = [s["id"] for s in got]
    assert ids == sorted(set(ids)), "an event repeated or out of order"
    assert ids == expected, f"lost: {sorted(set(expected) - set(ids))[:10]}"


def test_another_users_tasks_are_404_and_never_arrive(server: ServerFactory) -> None:
    srv = server()
    with login(srv) as alice, login(srv) as bob:
        theirs = submit(alice, "countdown", {"seconds": 0.2})
        with stream(srv, bob, "tasks=mine") as sse:
            assert subscribers(srv) == 1
            for query in (f"tasks={theirs['id']}", f"tasks=mine,{theirs['id']}", "tasks=999999"):
                r = httpx.get(f"{srv.url}/api/v1/events?{query}", headers=bob.headers, timeout=15)
                assert_error(r, 404, "not_found")
            wait_for(alice, theirs["id"], "succeeded")
            again = submit(
                alice, "add", {"operand1": 1, "operand2": 2}
            )  # events after bob subscribed
            wait_for(alice, again["id"], "succeeded")
            mine = submit(bob, "add", {"operand1": 1, "operand2": 2})
            seen = []
            for e in sse.events():  # the hub sends in id order: alice's would come first
                seen.append(e["data"])
                if e["data"].get("to") == "succeeded":
                    break
        assert {d["task"] for d in seen} == {mine["id"]}, seen
        assert {d["owner"] for d in seen} == {bob.get("/auth/me").json()["username"]}


def test_bad_requests_are_json_errors_before_the_stream(server: ServerFactory) -> None:
    srv = server(workers=1)
    url = f"{srv.url}/api/v1/events"
    with login(srv) as alice:
        auth = dict(alice.headers)
        r = httpx.get(url, headers={"Authorization": "Token not-a-token"}, timeout=15)
        assert_error(r, 401, "authentication_failed")
        assert r.headers["www-authenticate"] == "Token"
        assert_error(httpx.get(url, timeout=15), 401, "not_authenticated")
        for query in ("tasks=x", "tasks=7,", "tasks=" + ",".join(map(str, range(1, 1002)))):
            error = assert_error(httpx.get(f"{url}?{query}", headers=auth, timeout=15), 400)
            assert error["code"] == "invalid" and "tasks" in error["fields"], error
        r = httpx.get(url, headers={**auth, "Last-Event-ID": "last"}, timeout=15)
        assert assert_error(r, 400, "invalid")["fields"] == {
            "Last-Event-ID": ["must be an event id (a whole number from 0)"]
        }
        assert_error(httpx.get(f"{url}?tasks=all", headers=auth, timeout=15), 403)
        r = httpx.get(url, headers={**auth, "Origin": "https://evil.example"}, timeout=15)
        assert_error(r, 403, "origin_not_allowed")
        assert_error(httpx.get(url, headers={**auth, "Host": "evil.example"}, timeout=15), 400)
        r = httpx.post(url, headers=auth, timeout=15)
        assert_error(r, 405, "method_not_allowed")
        assert r.headers["allow"] == "GET, OPTIONS"
    assert subscribers(srv) == 0


def test_leaving_releases_the_subscriber(server: ServerFactory) -> None:
    srv = server(workers=1)
    with login(srv) as alice:
        assert subscribers(srv) == 0
        first = stream(srv, alice, "tasks=mine")
        second = stream(srv, alice, "tasks=mine")
        wait_until(lambda: subscribers(srv) == 2, "two subscribers")
        first.close()
        wait_until(lambda: subscribers(srv) == 1, "the first stream's subscriber released")
        second.close()
        wait_until(lambda: subscribers(srv) == 0, "every subscriber released")


def test_a_browser_session_and_a_staff_member_following_all(server: ServerFactory) -> None:
    srv = server(workers=1)
    made = run_tether(
        srv.home,
        "createsuperuser",
        "--noinput",
        DJANGO_SUPERUSER_USERNAME="boss",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="boss@example.org",
    )
    assert made.returncode == 0, made
    with httpx.Client(base_url=srv.url, timeout=15) as browser:
        page = browser.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf, page.text
        r = browser.post(
            "/admin/login/?next=/admin/",
            data={"username": "boss", "password": PASSWORD, "csrfmiddlewaretoken": csrf[1]},
        )
        assert r.status_code == 302, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    with login(srv, f"user-{uuid.uuid4().hex[:8]}") as alice:
        with Stream(srv, "tasks=all", Cookie=cookie, Origin=srv.url) as sse:
            task = submit(alice, "add", {"operand1": 1, "operand2": 2})
            for s in sse.statuses():
                if s["task"] == task["id"] and s["to"] == "succeeded":
                    break
        r = httpx.get(f"{srv.url}/api/v1/events", headers={"Cookie": "sessionid=ended"}, timeout=15)
        assert_error(r, 401, "authentication_failed")


def test_a_stopping_server_ends_its_streams_and_the_next_one_resumes(
    server: ServerFactory,
) -> None:
    srv = server(workers=1)
    with login(srv) as alice:
        first = submit(alice, "add", {"operand1": 1, "operand2": 2})
        wait_for(alice, first["id"], "succeeded")
        sse = stream(srv, alice, "tasks=mine&since=0")
        before = [s for _, s in zip(range(3), sse.statuses(), strict=False)]
        assert [s["to"] for s in before] == ["queued", "running", "succeeded"]
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert list(sse.events()) == []  # the server ends the stream, and nothing more
        assert sse.comments[-1] == ": server stopping: reconnect with Last-Event-ID"
        assert srv.proc.wait(15) == 0  # not held open by the stream
        sse.close()
        srv.start(same_port=True)
        with stream(
            srv, alice, "tasks=mine", **{"Last-Event-ID": sse.last_event_id or ""}
        ) as again:
            second = submit(alice, "add", {"operand1": 3, "operand2": 4})
            after = []
            for s in again.statuses():
                after.append(s)
                if s["to"] == "succeeded":
                    break
    assert {s["task"] for s in after} == {second["id"]}, after
    assert after[0]["id"] > before[-1]["id"]


def test_options_names_get_with_or_without_a_trailing_slash(server: ServerFactory) -> None:
    srv = server(workers=1)
    for path in ("/api/v1/events", "/api/v1/events/"):
        r = httpx.options(f"{srv.url}{path}", timeout=15)
        assert r.status_code == 200 and r.headers["allow"] == "GET, OPTIONS", (path, r)


@pytest.fixture
def celery_env(pg_database: str) -> dict[str, str]:
    """PostgreSQL (a fresh database) and a Redis database of this module's own."""
    require_port("Redis", 6379)
    import redis

    redis.Redis.from_url(BROKER).flushdb()
    return {"TETHER_DATABASE_URL": pg_database, "TETHER_BROKER_URL": BROKER}


def test_a_task_a_celery_worker_runs_streams_and_resumes(
    server: ServerFactory, worker: WorkerFactory, celery_env: dict[str, str]
) -> None:
    srv = server(**celery_env)
    worker()
    with login(srv) as alice:
        task = submit(alice, "ledger", {"steps": 300, "step_ms": 5})
        tid = task["id"]
        got: list[dict[str, Any]] = []
        with stream(srv, alice, f"tasks={tid}&since=0") as sse:
            for e in sse.events():
                got.append(e)
                if e["event"] == "progress" and e["data"]["progress"]["done"] >= 20:
                    break
            assert alice.post(f"/tasks/{tid}/pause").status_code == 202
            for e in sse.events():
                got.append(e)
                if e["data"].get("to") == "paused":
                    break
            resume_at = sse.last_event_id
        assert alice.post(f"/tasks/{tid}/resume").status_code == 202
        wait_for(alice, tid, "succeeded", timeout=60)  # while nobody listens
        with stream(srv, alice, f"tasks={tid}", **{"Last-Event-ID": resume_at or ""}) as again:
            for s in again.statuses():
                got.append({"event": "status", "data": s})
                if s["to"] == "succeeded":
                    break
        history = events(alice, tid)
    statuses = [e["data"] for e in got if e["event"] == "status"]
    assert [(s["id"], s["to"]) for s in statuses] == [(h["id"], h["to_status"]) for h in history]
    assert [s["to"] for s in statuses] == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]
    first_progress = next(i for i, e in enumerate(got) if e["event"] == "progress")
    assert [e["data"]["to"] for e in got[:first_progress]] == ["queued", "running"]
