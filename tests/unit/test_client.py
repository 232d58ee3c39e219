"""The Python client's pure parts (errors, URLs, event bookkeeping, the CLI's wording),
and its event stream against a scripted WebSocket server on a local socket: reconnection
with ``since``, close codes, refused handshakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.sync.server import ServerConnection, serve

from tether.cli.connection import BAD_ENV_TOKEN, EXIT_UNREACHABLE, NOT_LOGGED_IN, cli_error
from tether.cli.watch import Voice
from tether.client import (
    BadRequest,
    Client,
    Conflict,
    EventStream,
    Follower,
    Forbidden,
    NotFound,
    Notice,
    StreamUnavailable,
    TooManyRequests,
    Unauthorized,
    Unreachable,
)
from tether.client.errors import api_error, reply_error
from tether.client.stream import close_error, ws_url


def test_ws_url_keeps_host_port_and_prefix() -> None:
    assert ws_url("http://127.0.0.1:8000") == "ws://127.0.0.1:8000/ws/v1"
    assert ws_url("https://tether.example/prefix/") == "wss://tether.example/prefix/ws/v1"


def test_errors_by_status_and_reply_code() -> None:
    assert isinstance(api_error(400, "invalid", "bad"), BadRequest)
    conflict = api_error(409, "illegal_transition", "no", {"status": "paused"})
    assert isinstance(conflict, Conflict) and conflict.current_status == "paused"
    login = api_error(401, "invalid_credentials", "wrong", token_rejected=False)
    assert isinstance(login, Unauthorized) and not login.token_rejected
    missing = reply_error({"code": "not_found", "message": "no task 9", "tasks": [9]})
    assert isinstance(missing, NotFound) and missing.status == 404
    assert missing.message == "no task 9" and missing.body["tasks"] == [9]
    assert isinstance(reply_error({"code": "permission_denied", "message": "x"}), Forbidden)
    assert reply_error(None).status == 400
    assert isinstance(close_error(4401, ""), Unauthorized)
    assert isinstance(close_error(4429, ""), TooManyRequests)
    assert close_error(4008, "too slow") is None and close_error(1012, "") is None


def test_cli_lines_for_client_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    gone = cli_error(Unreachable("http://h:1", "refused"))
    assert gone.code == EXIT_UNREACHABLE and "is `tether serve` running?" in gone.message
    assert cli_error(Unauthorized("Invalid token.")).message == NOT_LOGGED_IN
    login = Unauthorized("wrong username or password", token_rejected=False)
    assert cli_error(login).message == "wrong username or password"
    monkeypatch.setenv("TETHER_TOKEN", "x")
    assert cli_error(Unauthorized("Invalid token.")).message == BAD_ENV_TOKEN


def test_voice_says_each_notice_in_one_line() -> None:
    said: list[str] = []
    voice = Voice()
    voice.say = said.append
    voice.notify(Notice.POLLING, "http://h has no event stream at /ws/v1 (HTTP 404)")
    voice.notify(Notice.LOST, "")
    voice.notify(Notice.BACK, "")
    assert (
        said[0] == "http://h has no event stream at /ws/v1 (HTTP 404); polling every 0.3s instead"
    )
    assert said[1].startswith("the server is unreachable; retrying for up to 120s")
    assert said[2] == "the server is back"


def test_status_events_at_or_before_the_last_id_are_dropped() -> None:
    stream = EventStream("http://h", "t", [7], since=10)
    frame = {"type": "event", "kind": "status", "id": 10, "task": 7}
    assert stream._accept(frame) is None  # already delivered
    assert stream._accept({**frame, "id": 11}) == {"kind": "status", "id": 11, "task": 7}
    assert stream._accept({**frame, "id": 11}) is None and stream.last_id == 11
    progress = {"type": "event", "kind": "progress", "id": None, "task": 7}
    assert stream._accept(progress) == {"kind": "progress", "id": None, "task": 7}
    assert stream._accept({"type": "ping"}) is None


class PollOnly:
    """A client whose server has no event stream; tasks change when told to."""

    def __init__(self, tasks: dict[int, dict[str, Any]]) -> None:
        self.tasks = tasks

    def task(self, task_id: int) -> dict[str, Any]:
        if task_id not in self.tasks:
            raise NotFound(f"task {task_id} not found")
        return dict(self.tasks[task_id])

    def events(self, *args: Any, **kw: Any) -> EventStream:
        raise StreamUnavailable("http://h has no event stream at /ws/v1 (HTTP 404)")


def test_follower_polls_a_server_without_a_stream_and_says_so_once() -> None:
    fake = PollOnly({1: {"id": 1, "status": "running"}, 2: {"id": 2, "status": "succeeded"}})
    notices: list[Notice] = []
    follower = Follower(
        fake,  # type: ignore[arg-type]
        [1, 2, 3],
        poll_interval=0,
        notify=lambda n, _: notices.append(n),
    )
    follower.start()
    assert follower.mode == "poll" and notices == [Notice.POLLING]
    assert follower.latest == {1: fake.tasks[1], 2: fake.tasks[2], 3: None}
    assert follower.next(0) == set() and not follower.done
    fake.tasks[1] = {"id": 1, "status": "succeeded", "result": 5}
    assert follower.next(0) == {1} and follower.done
    assert notices == [Notice.POLLING]


class Scripted:
    """A client whose event stream plays ``events``; counts the fetches of each task."""

    def __init__(self, tasks: dict[int, dict[str, Any]], events: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.events_left = list(events)
        self.fetches: dict[int, int] = {}

    def task(self, task_id: int) -> dict[str, Any]:
        self.fetches[task_id] = self.fetches.get(task_id, 0) + 1
        return dict(self.tasks[task_id])

    def events(self, tasks: Any, **kw: Any) -> Any:
        assert tasks == [1]
        return self

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        return self.events_left.pop(0) if self.events_left else None

    def close(self) -> None:
        pass


def test_follower_applies_events_and_fetches_only_the_end() -> None:
    progress = {"done": 5, "total": 10, "eta_seconds": 3.0}
    fake = Scripted(
        {1: {"id": 1, "status": "running", "progress": None}},
        [
            {"kind": "progress", "id": None, "task": 1, "progress": progress},
            {"kind": "progress", "id": None, "task": 2, "progress": progress},  # not followed
            {"kind": "status", "id": 8, "task": 1, "from": "running", "to": "pausing"},
            {"kind": "status", "id": 9, "task": 1, "from": "pausing", "to": "succeeded"},
        ],
    )
    with Follower(fake, [1]) as follower:  # type: ignore[arg-type]
        follower.start()
        assert fake.fetches == {1: 2}  # before and after subscribing
        assert follower.next() == {1} and follower.latest[1]["progress"] == progress  # type: ignore[index]
        assert follower.next() == set()
        assert follower.next() == {1}
        paused = follower.latest[1]
        assert paused is not None and paused["status"] == "pausing"
        assert paused["progress"]["eta_seconds"] is None  # not counting down
        fake.tasks[1] = {"id": 1, "status": "succeeded", "result": 7}
        assert follower.next() == {1} and follower.done
        assert follower.latest[1] == {"id": 1, "status": "succeeded", "result": 7}
        assert fake.fetches == {1: 3}


# -- against a scripted WebSocket server ---------------------------------------------

Script = Callable[[ServerConnection, int], None]


@contextmanager
def scripted(script: Script, **options: Any) -> Iterator[str]:
    """A WebSocket server on a free local port running ``script(ws, n)`` for its n-th
    connection (from 0); yields its http URL."""
    count = iter(range(1000))

    def handler(ws: ServerConnection) -> None:
        script(ws, next(count))

    with serve(handler, "127.0.0.1", 0, **options) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        port = server.socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        server.shutdown()
    thread.join(5)


def hello_and_subscribe(ws: ServerConnection, received: list[dict[str, Any]], upto: int) -> None:
    assert ws.request is not None and ws.request.headers["Authorization"] == "Token tok"
    ws.send(json.dumps({"type": "hello", "user": "u", "server": "t", "ping_interval": 20}))
    request = json.loads(ws.recv(timeout=5))
    received.append(request)
    ws.send(
        json.dumps({"type": "reply", "req": request["req"], "ok": True, "data": {"upto": upto}})
    )


def status(event_id: int, to: str = "running") -> str:
    return json.dumps({"type": "event", "kind": "status", "id": event_id, "task": 7, "to": to})


def test_a_4008_close_resumes_with_since_and_nothing_twice() -> None:
    subscribes: list[dict[str, Any]] = []

    def script(ws: ServerConnection, n: int) -> None:
        if n == 0:
            hello_and_subscribe(ws, subscribes, upto=10)
            ws.send(json.dumps({"type": "ping"}))
            ws.send(status(11))
            ws.send(json.dumps({"type": "event", "kind": "progress", "id": None, "task": 7}))
            ws.send(status(12))
            ws.close(4008, "too far behind; reconnect with since")
        else:
            hello_and_subscribe(ws, subscribes, upto=13)
            ws.send(status(12))  # replayed again: the client has it
            ws.send(status(13, "succeeded"))
            ws.recv()  # until the client leaves

    with scripted(script) as url, Client(url, "tok") as client:
        notices: list[Notice] = []
        stream = client.events([7], notify=lambda n, _: notices.append(n))
        got = [stream.get(5) for _ in range(4)]
        stream.close()
    assert [(e or {}).get("id") for e in got] == [11, None, 12, 13], got
    assert [s.get("since") for s in subscribes] == [None, 12]
    assert [s["tasks"] for s in subscribes] == [[7], [7]]
    assert notices == []  # reconnected at once: nothing to say


def test_since_is_sent_and_upto_becomes_the_resume_point() -> None:
    subscribes: list[dict[str, Any]] = []

    def script(ws: ServerConnection, n: int) -> None:
        hello_and_subscribe(ws, subscribes, upto=40)
        if n == 0:
            ws.close(1012, "restart")
        else:
            ws.send(status(41))
            ws.recv()

    with scripted(script) as url, Client(url, "tok") as client:
        fresh = client.events("mine")
        assert fresh.last_id == 40 and fresh.get(5) == {
            "kind": "status", "id": 41, "task": 7, "to": "running"
        }  # fmt: skip
        fresh.close()
        resumed = client.events("mine", since=5)
        resumed.close()
    assert [s.get("since") for s in subscribes] == [None, 40, 5]


def test_refusals_are_raised_not_retried() -> None:
    def script(ws: ServerConnection, n: int) -> None:
        if n == 0:
            ws.close(4401, "invalid token")
            return
        ws.send(json.dumps({"type": "hello"}))
        request = json.loads(ws.recv(timeout=5))
        error = {"code": "not_found", "message": "no task 99"}
        ws.send(json.dumps({"type": "reply", "req": request["req"], "ok": False, "error": error}))
        ws.recv()

    with scripted(script) as url, Client(url, "tok") as client:
        with pytest.raises(Unauthorized, match="invalid token"):
            client.events([7])
        with pytest.raises(NotFound, match="no task 99"):
            client.events([99])


def test_a_server_without_the_stream_is_stream_unavailable() -> None:
    def refuse(ws: ServerConnection, request: Any) -> Any:
        return ws.respond(404, "no such endpoint\n")

    def never(ws: ServerConnection, n: int) -> None:
        raise AssertionError("no connection gets this far")

    missing = r"has no event stream at /ws/v1 \(HTTP 404\)"
    with (
        scripted(never, process_request=refuse) as url,
        Client(url, "tok") as client,
        pytest.raises(StreamUnavailable, match=missing),
    ):
        client.events([7])


def test_a_lost_server_is_retried_for_retry_for_then_unreachable() -> None:
    def script(ws: ServerConnection, n: int) -> None:
        hello_and_subscribe(ws, [], upto=1)
        ws.close(1001, "going away")

    notices: list[Notice] = []
    with scripted(script) as url, Client(url, "tok") as client:
        stream = client.events([7], retry_for=0.2, notify=lambda n, _: notices.append(n))
    # the server is gone now: reconnecting fails until retry_for has passed
    with pytest.raises(Unreachable):
        while True:
            stream.get(1)
    assert notices == [Notice.LOST]


def test_a_pipeline_stream_subscribes_to_it_again_after_a_cut() -> None:
    subscribes: list[dict[str, Any]] = []
    change = {"type": "event", "kind": "pipeline", "id": None, "pipeline": 3, "to": "running"}

    def script(ws: ServerConnection, n: int) -> None:
        hello_and_subscribe(ws, subscribes, upto=20)
        if n == 0:
            ws.send(json.dumps(change))
            ws.close(1012, "restart")
        else:
            ws.send(status(21))
            ws.recv()

    with scripted(script) as url:
        stream = EventStream(url, "tok", [], pipelines=[3]).open()
        first = stream.hello
        assert stream.get(5) == {k: v for k, v in change.items() if k != "type"}
        assert stream.last_id == 20  # a pipeline's change is no resume point
        assert (stream.get(5) or {}).get("id") == 21
        assert stream.hello is not first  # a new connection: re-read the pipeline
        stream.close()
    assert [(s["tasks"], s["pipelines"], s.get("since")) for s in subscribes] == [
        ([], [3], None),
        ([], [3], 20),
    ]
