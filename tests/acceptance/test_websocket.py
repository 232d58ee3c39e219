"""The WebSocket API ``/ws/v1`` of a real ``tether serve``, over real sockets.

Authentication (token header, auth frame, session cookie; 4401, 4403), events of a
task's whole life in order, pause and cancel over the socket, resuming with ``since``
in the middle of a burst, tenancy, bad input, and a client that stops reading.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame as WireFrame
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from tests.acceptance.conftest import (
    PASSWORD,
    Server,
    ServerFactory,
    login,
    run_tether,
    submit,
    wait_for,
    wait_until,
)
from tests.acceptance.ws_helpers import (
    Socket,
    all_reached,
    closed,
    raw_connect,
    reached,
    token_of,
    ws_url,
)

pytestmark = pytest.mark.timeout(180)
LIFE = ["queued", "running", "pausing", "paused", "queued", "running", "succeeded"]


@pytest.fixture
def srv(server: ServerFactory) -> Server:
    return server(workers=2)


# -- authentication and origin --------------------------------------------------------------
def test_auth_by_header_frame_and_session_cookie(srv: Server) -> None:
    with login(srv) as api:
        token = token_of(api)
        username = api.get("/auth/me").json()["username"]
    with Socket.open(srv, token) as ws:
        assert ws.hello == {
            "type": "hello",
            "user": username,
            "server": httpx.get(f"{srv.url}/api/v1/health").json()["version"],
            "ping_interval": 20,
        }
        assert isinstance(ws.ok("types"), list)

    conn = raw_connect(srv)
    conn.send(json.dumps({"type": "auth", "token": token}))
    with Socket(conn) as ws:
        assert ws.hello["user"] == username
        ws.error("auth", "already_authenticated", token=token)

    admin, cookie = session_cookie(srv)
    for origin in ({}, {"Origin": srv.url}):
        with Socket(raw_connect(srv, {"Cookie": cookie, **origin})) as ws:
            assert ws.hello["user"] == admin
            assert ws.ok("subscribe", tasks="all")["tasks"] == "all"  # staff may
    conn = raw_connect(srv, {"Cookie": cookie, "Origin": "http://evil.example"})
    assert closed(conn)[0] == 4403  # a page of another site may not use the cookie
    conn = raw_connect(srv, {"Cookie": "sessionid=not-a-session"})
    assert closed(conn)[0] == 4401


def session_cookie(srv: Server, name: str = "admin-ws") -> tuple[str, str]:
    """Log a new superuser in through /admin/login/; (username, Cookie header)."""
    done = run_tether(
        srv.home,
        "createsuperuser",
        "--noinput",
        DJANGO_SUPERUSER_USERNAME=name,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
    )
    assert done.returncode == 0, done.stderr
    with httpx.Client(base_url=srv.url, timeout=15) as web:
        page = web.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert csrf, page.text
        r = web.post(
            "/admin/login/?next=/admin/",
            data={"username": name, "password": PASSWORD, "csrfmiddlewaretoken": csrf[1]},
        )
        assert r.status_code == 302, r.text
        return name, f"sessionid={web.cookies['sessionid']}"


def test_a_user_no_longer_staff_stops_following_all(srv: Server) -> None:
    name, cookie = session_cookie(srv, "demoted-ws")
    with Socket(raw_connect(srv, {"Cookie": cookie})) as ws:
        assert ws.ok("subscribe", tasks="all")["tasks"] == "all"
        demote = f"from django.contrib.auth.models import User; User.objects.filter(username='{name}').update(is_staff=False, is_superuser=False)"  # noqa: E501
        done = run_tether(srv.home, "manage", "shell", "-c", demote)
        assert done.returncode == 0, done.stderr
        ws.send({"type": "types", "req": 1})  # any request checks the credential again
        code, reason = closed(ws.conn)
    assert code == 4401 and "no longer" in reason


def test_bad_credentials_close_4401_and_foreign_origin_4403(srv: Server) -> None:
    with login(srv) as api:
        token = token_of(api)
        bad = {"Authorization": "Token not-a-token"}
        code, reason = closed(raw_connect(srv, bad))
        assert (code, reason) == (4401, "invalid token; log in again")
        assert closed(raw_connect(srv, {"Authorization": "Token a b"}))[0] == 4401

        conn = raw_connect(srv)  # says nothing: closed after 5 s
        assert closed(conn, timeout=30)[0] == 4401
        conn = raw_connect(srv)
        conn.send(json.dumps({"type": "subscribe", "req": 1, "tasks": "mine"}))
        assert closed(conn)[0] == 4401  # the first frame must authenticate
        conn = raw_connect(srv)
        conn.send(json.dumps({"type": "auth", "token": "nope"}))
        assert closed(conn)[0] == 4401

        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{srv.port + 1}"):
            conn = raw_connect(srv, {"Authorization": f"Token {token}", "Origin": origin})
            assert closed(conn)[0] == 4403, origin
        sock = socket.create_connection(("127.0.0.1", srv.port))  # Host: evil.example
        url = f"ws://evil.example:{srv.port}/ws/v1"
        conn = raw_connect(srv, {"Authorization": f"Token {token}"}, url=url, sock=sock)
        assert closed(conn)[0] == 4400
        with Socket.open(srv, token, Origin=srv.url) as ws:  # the server's own pages
            assert ws.ok("list")["count"] == 0

        # a token revoked while connected: the next request closes the connection
        with Socket.open(srv, token) as ws:
            assert api.post("/auth/logout").status_code == 204
            ws.send({"type": "types", "req": 1})
            assert closed(ws.conn)[0] == 4401


def test_trusted_origin_setting(server: ServerFactory) -> None:
    srv = server(workers=1, TETHER_ALLOWED_ORIGINS="https://dash.example.com")
    with login(srv) as api:
        token = token_of(api)
    with Socket.open(srv, token, Origin="https://dash.example.com") as ws:
        assert ws.hello["type"] == "hello"
    conn = raw_connect(srv, {"Authorization": f"Token {token}", "Origin": "https://x.example"})
    assert closed(conn)[0] == 4403


# -- events and commands ----------------------------------------------------------------------
def test_a_countdown_life_in_order_with_pause_over_the_socket(srv: Server) -> None:
    with login(srv) as api, Socket.open(srv, token_of(api)) as ws:
        assert ws.ok("subscribe", tasks="mine")["tasks"] == "mine"
        task = ws.ok("submit", task_type="countdown", params={"seconds": 1.5, "tick_ms": 5})
        assert task["status"] == "queued" and task["type"] == "countdown"
        tid = task["id"]
        ws.events_until(
            lambda events: any(e["kind"] == "progress" and e["task"] == tid for e in events),
            "a progress event",
        )
        paused = ws.ok("pause", task=tid, reason="lunch")
        assert paused["status"] in ("pausing", "paused"), paused
        ws.events_until(reached(tid, "paused"), "paused")
        assert ws.ok("get", task=tid)["status"] == "paused"
        ws.error("pause", "illegal_transition", task=tid)  # as REST's 409
        ws.ok("resume", task=tid)
        ws.events_until(reached(tid, "succeeded"), "succeeded", timeout=60)
        history = api.get(f"/tasks/{tid}/events").json()

    statuses = ws.statuses(tid)
    assert [e["to"] for e in statuses] == LIFE
    assert [e["from"] for e in statuses] == [None, *LIFE[:-1]]
    ids = [e["id"] for e in statuses]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    pausing = statuses[2]
    assert pausing["reason"] == "lunch" and pausing["actor"].startswith("user:")
    assert {e["owner"] for e in ws.events} == {task["owner"]}
    assert {e["task_type"] for e in ws.events} == {"countdown"}
    # progress between running and pausing, counting up
    order = [(e["kind"], e.get("to")) for e in ws.events]
    first_progress = order.index(("progress", None))
    assert order.index(("status", "running")) < first_progress < order.index(("status", "pausing"))
    done = [e["progress"]["done"] for e in ws.events if e["kind"] == "progress"]
    assert done == sorted(done) and done[-1] >= 1
    assert [h["id"] for h in history] == ids  # the same history as REST's


def test_cancel_and_commands_as_rest(srv: Server) -> None:
    with login(srv) as api, Socket.open(srv, token_of(api)) as ws:
        task = ws.ok("submit", task_type="countdown", params={"seconds": 60})
        tid = task["id"]
        assert ws.ok("subscribe", tasks=[tid], since=0)["tasks"] == [tid]
        ws.events_until(reached(tid, "running"), "running")
        cancelled = ws.ok("cancel", task=tid)
        assert cancelled["status"] in ("cancelling", "cancelled")
        ws.events_until(reached(tid, "cancelled"), "cancelled")
        assert [e["to"] for e in ws.statuses(tid)] == [
            "queued",
            "running",
            "cancelling",
            "cancelled",
        ]
        assert ws.ok("get", task=tid) == api.get(f"/tasks/{tid}").json()
        page = ws.ok("list", status=["cancelled"], task_type="countdown", page_size=1)
        assert page == api.get("/tasks?status=cancelled&type=countdown&page_size=1").json()
        assert ws.ok("types") == api.get("/task-types").json()

        # the same refusals, codes and messages as REST
        rest = api.post("/tasks", json={"type": "countdown", "params": {"seconds": -1}}).json()
        error = ws.error(
            "submit", rest["error"]["code"], task_type="countdown", params={"seconds": -1}
        )
        assert error == rest["error"]
        rest = api.post("/tasks", json={"type": "csv_import", "params": {}}).json()
        error = ws.error("submit", "internal_task_type", task_type="csv_import", params={})
        assert error == {**rest["error"], "field": "task_type"}
        error = ws.error("submit", "invalid", params={})
        assert error["message"] == "task_type: This field is required."
        rest = api.get("/tasks?page_size=0").json()
        assert ws.error("list", "invalid_params", page_size=0) == rest["error"]
        rest = api.get("/tasks?status=sleeping").json()
        assert ws.error("list", "invalid_params", status="sleeping") == rest["error"]
        rest = api.post(f"/tasks/{tid}/resume").json()
        assert ws.error("resume", "illegal_transition", task=tid) == rest["error"]
        rest = api.post(f"/tasks/{tid}/pause", json={"reason": 5}).json()
        assert ws.error("pause", rest["error"]["code"], task=tid, reason=5) == rest["error"]
        assert ws.error("get", "not_found", task=10**6)["message"] == "no task 1000000"
        ws.error("get", "invalid_params", task="7")
        ws.error("cancel", "invalid_params", task=True)


def test_since_resumes_in_a_burst_without_gap_or_duplicate(srv: Server) -> None:
    """One socket follows from the start; another leaves in the middle of a burst of
    transitions, misses some, and comes back with since: it gets exactly the rest."""
    with login(srv) as api:
        token = token_of(api)
        whole = Socket.open(srv, token)
        whole.ok("subscribe", tasks="mine", since=0)
        part = Socket.open(srv, token)
        start = part.ok("subscribe", tasks="mine")["upto"]

        def burst(n: int) -> list[int]:
            with httpx.Client(base_url=f"{srv.url}/api/v1", headers=api.headers) as c:
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
        part.events_until(
            lambda ev: len([e for e in ev if e["kind"] == "status"]) >= 60, "60 status events"
        )
        part.close()
        last = part.statuses()[-1]["id"]
        # others commit meanwhile
        whole.events_until(
            lambda ev: any(e["kind"] == "status" and e["id"] >= last + 50 for e in ev),
            "50 more events",
        )
        again = Socket.open(srv, token)
        upto = again.ok("subscribe", tasks="mine", since=last)["upto"]
        assert upto >= last + 50  # some of what follows is replayed from the history
        submitter.join(60)
        second = burst(50)  # and some arrives live
        tasks = first + second
        whole.events_until(all_reached(tasks, "succeeded"), "every task succeeded", timeout=90)
        final = whole.statuses()[-1]["id"]
        again.events_until(
            lambda ev: any(e["kind"] == "status" and e["id"] == final for e in ev),
            f"event {final}",
        )

    everything = [e["id"] for e in whole.statuses()]
    assert everything == sorted(set(everything))  # in order, no duplicate
    expected = []
    for t in tasks:
        expected += [h["id"] for h in api_history(srv, token, t)]
    assert everything == sorted(expected)  # nothing missed
    seen = [e["id"] for e in part.statuses()] + [e["id"] for e in again.statuses()]
    assert seen == [i for i in everything if i > start]
    assert any(i > upto for i in seen)  # live ones after the replay
    assert len(everything) >= 500
    for s in (whole, again):
        s.close()


def api_history(srv: Server, token: str, task: int) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{srv.url}/api/v1/tasks/{task}/events", headers={"Authorization": f"Token {token}"}
    )
    assert r.status_code == 200, r.text
    return list(r.json())


def test_another_users_events_never_arrive(srv: Server) -> None:
    with login(srv) as alice, login(srv) as bob:
        theirs = alice.post("/tasks", json={"type": "countdown", "params": {"seconds": 0.5}})
        theirs_id = theirs.json()["id"]
        with Socket.open(srv, token_of(bob)) as ws:
            error = ws.error("subscribe", "not_found", tasks=[theirs_id])
            assert error["message"] == f"no task {theirs_id}"
            assert ws.ok("list")["count"] == 0
            ws.error("get", "not_found", task=theirs_id)
            ws.error("pause", "not_found", task=theirs_id)
            ws.error("subscribe", "permission_denied", tasks="all")
            ws.ok("subscribe", tasks="mine", since=0)
            # Alice's task runs to its end; then Bob's own, whose events come later
            wait_for(alice, theirs_id, "succeeded")
            mine = ws.ok("submit", task_type="countdown", params={"seconds": 0.2})
            ws.events_until(reached(mine["id"], "succeeded"), "bob's task succeeded")
        assert {e["task"] for e in ws.events} == {mine["id"]}
        assert {e["owner"] for e in ws.events} == {mine["owner"]}


# -- bad input --------------------------------------------------------------------------------
def test_bad_frames_get_error_replies_or_documented_closes(srv: Server) -> None:
    with login(srv) as api:
        token = token_of(api)
        ws = Socket.open(srv, token)
        for text, code in [
            ("{not json", "parse_error"),
            ("[" * 100 + "]" * 100, "too_deep"),
            ('{"type": "get", "req": 1, "task": NaN}', "parse_error"),
            ('{"type": "get", "req": 1, "x": "\\u0000"}', "bad_text"),
            ("[1, 2]", "bad_frame"),
            ('"subscribe"', "bad_frame"),
            (json.dumps({"type": "types"}), "missing_req"),
            (json.dumps({"type": "types", "req": None}), "missing_req"),
            (json.dumps({"type": "types", "req": {"a": 1}}), "bad_req"),
            (json.dumps({"type": "types", "req": "x" * 101}), "bad_req"),
        ]:
            ws.send(text)
            reply = ws.reply_to(None)
            assert reply["ok"] is False and reply["error"]["code"] == code, (text, reply)
        ws.conn.send(b"\x00\x01")
        assert ws.reply_to(None)["error"]["code"] == "bad_frame"
        assert ws.error("nope", "unknown_type")
        assert ws.error(None, "unknown_type")  # type: ignore[arg-type]
        ws.send({"type": "types", "req": "mine"})
        assert ws.reply_to("mine")["ok"] is True  # string ids are echoed
        ws.error("subscribe", "too_many_tasks", tasks=list(range(1, 100_001)))
        ws.error("subscribe", "too_many_tasks", tasks=list(range(1, 1002)))
        for bad in ([], "some", [0], [1.5], ["7"], [True], [2**70], None):
            ws.error("subscribe", "invalid_params", tasks=bad)
        for since in (-1, "3", 1.5, True):
            ws.error("subscribe", "invalid_params", tasks="mine", since=since)
        assert ws.ok("unsubscribe", tasks=[123]) == {"tasks": [123]}

        # a frame over 1 MiB closes the connection (1009); others are unaffected
        other = Socket.open(srv, token)
        ws.conn.send("x" * (1024 * 1024 + 1))
        assert closed(ws.conn)[0] == 1009
        assert other.ok("list")["count"] == 0
        # a flood: past the burst, requests are refused as throttled, none unanswered
        for i in range(300):
            other.send({"type": "nope", "req": i})
        replies = [other.reply_to(i) for i in range(300)]
        codes = [r["error"]["code"] for r in replies]
        assert set(codes) == {"unknown_type", "throttled"}, codes
        assert codes[:90] == ["unknown_type"] * 90  # a burst is allowed
        assert all(
            r["error"]["retry_after"] > 0 for r in replies if r["error"]["code"] == "throttled"
        )
        with Socket.open(srv, token) as third:  # a connection of its own is not throttled
            assert third.ok("list")["count"] == 0
        assert api.get("/health").status_code == 200
        other.close()


def test_too_many_connections_of_one_user(srv: Server) -> None:
    with login(srv) as api, login(srv) as someone:
        token = token_of(api)
        sockets = [Socket.open(srv, token) for _ in range(64)]
        try:
            assert closed(raw_connect(srv, {"Authorization": f"Token {token}"}))[0] == 4429
            with Socket.open(srv, token_of(someone)) as ws:  # another user is unaffected
                assert ws.ok("list")["count"] == 0
            sockets.pop().close()
            # a slot is free again once the server has seen that one go
            fresh = wait_until(lambda: Socket.try_open(srv, token), "a free slot")
            fresh.close()
        finally:
            for s in sockets:
                s.close()


def test_unknown_websocket_path(srv: Server) -> None:
    conn = raw_connect(srv, url=f"ws://127.0.0.1:{srv.port}/ws/v2")
    assert closed(conn)[0] == 4404


# -- a client that stops reading --------------------------------------------------------------
class StalledClient:
    """A WebSocket client over a plain socket with a tiny receive buffer, which
    subscribes and then reads nothing until ``drain()``."""

    def __init__(self, srv: Server, token: str) -> None:
        self.proto = ClientProtocol(parse_uri(ws_url(srv)), max_size=None)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", srv.port))
        request = self.proto.connect()
        request.headers["Authorization"] = f"Token {token}"
        self.proto.send_request(request)
        self._flush()
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.reset = False
        self._until(lambda: any(f.get("type") == "hello" for f in self.frames), 30)
        self.proto.send_text(json.dumps({"type": "subscribe", "req": 1, "tasks": "mine"}).encode())
        self._flush()
        self._until(lambda: any(f.get("req") == 1 for f in self.frames), 30)

    def _flush(self) -> None:
        for chunk in self.proto.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _until(self, done: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail("timed out reading the stalled client's socket")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:  # the server cut it off
                self.reset = True
                return
            if not data:
                self.proto.receive_eof()
                self.reset = self.close_code is None  # cut off without a close frame
            else:
                self.proto.receive_data(data)
            for event in self.proto.events_received():
                if isinstance(event, Response):
                    assert event.status_code == 101, event
                elif isinstance(event, WireFrame) and event.opcode == Opcode.TEXT:
                    self.frames.append(json.loads(bytes(event.data)))
                elif isinstance(event, WireFrame) and event.opcode == Opcode.CLOSE:
                    rcvd = self.proto.close_rcvd
                    self.close_code = rcvd.code if rcvd is not None else 1005
            self._flush()  # pongs, the close answer
            if not data or self.close_code is not None:
                return

    def status_ids(self) -> list[int]:
        return [f["id"] for f in self.frames if f.get("kind") == "status"]

    def drain(self, done: Any, timeout: float) -> None:
        self._until(lambda: done() or self.close_code is not None or self.reset, timeout)


def test_a_client_that_stops_reading_does_not_delay_another(srv: Server) -> None:
    """One client reads nothing while tasks send it megabytes of progress (more than
    every buffer between it and the server holds) and status events; another client
    of the same user gets all of it, and the first, when it reads again, has lost no
    status event (or was closed 4008, too far behind, and lost none before that)."""
    buffers = kernel_send_buffer_max() + 1024 * 1024  # the server's socket, and more
    with login(srv) as api:
        token = token_of(api)
        stalled = StalledClient(srv, token)
        with Socket(raw_connect(srv, {"Authorization": f"Token {token}"}, max_size=None)) as ws:
            ws.ok("subscribe", tasks="mine")
            big = [submit(api, "chatty", {"steps": 40, "size": 500_000})["id"] for _ in range(2)]
            quick = [submit(api, "add", {"operand1": i, "operand2": 0})["id"] for i in range(100)]
            ws.events_until(all_reached(big + quick, "succeeded"), "every task succeeded", 120)
            wanted = [e["id"] for e in ws.statuses()]
            sent = sum(len(json.dumps(e)) for e in ws.events)
        assert sent > 2 * buffers, sent  # the stalled client's share cannot all be in buffers
        stalled.drain(lambda: stalled.status_ids() == wanted, timeout=60)
        got = stalled.status_ids()
        assert stalled.close_code in (None, 4008), stalled.close_code
        assert got == (wanted if stalled.close_code is None else wanted[: len(got)])
        stalled.sock.close()


def kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer may grow to here (tcp_wmem's maximum)."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except OSError:
        return 8 * 1024 * 1024


def test_a_client_too_far_behind_is_closed_4008_and_let_go(server: ServerFactory) -> None:
    """With room for 50 waiting status events, a client that reads nothing while its
    send waits is closed (4008), or cut off when not even the close gets through; the
    server lets it go (its subscription ends), it lost no status event before that, and
    another user's client is unaffected (it never has 50 events waiting)."""
    srv = server(workers=2, TETHER_EVENT_QUEUE_LIMIT="50")
    with login(srv) as api, login(srv) as other:
        stalled = StalledClient(srv, token_of(api))
        with Socket.open(srv, token_of(other)) as ws:
            ws.ok("subscribe", tasks="mine")
            assert api.get("/health").json()["event_subscribers"] == 2
            tasks = [submit(api, "chatty", {"steps": 30, "size": 500_000})["id"] for _ in range(2)]
            tasks += [submit(api, "add", {"operand1": i, "operand2": 0})["id"] for i in range(60)]
            theirs = [submit(other, "add", {"operand1": i, "operand2": 0})["id"] for i in range(5)]
            ws.events_until(all_reached(theirs, "succeeded"), "the other user's tasks")
            for t in tasks:
                wait_for(api, t, "succeeded", timeout=120)
            wait_until(
                lambda: api.get("/health").json()["event_subscribers"] == 1,
                "the stalled client's subscription to end",
            )
            assert ws.ok("get", task=theirs[0])["status"] == "succeeded"
        stalled.drain(lambda: False, timeout=60)
        assert stalled.reset or stalled.close_code == 4008, stalled.close_code
        wanted = sorted(h["id"] for t in tasks for h in api.get(f"/tasks/{t}/events").json())
        got = stalled.status_ids()
        assert got == wanted[: len(got)] and len(got) < len(wanted)
        stalled.sock.close()
