"""The SSE endpoint's own logic: the query and Last-Event-ID read as documented, hub
frames written as SSE events, and the pump (a real Subscriber, an in-memory client)
sending frames, pings and the end of the stream."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tether.events.hub import encode
from tether.events.subscriber import Replay, Subscriber, streams_per_user
from tether.server import sse, sse_format
from tether.server.sse_format import Refusal, Selection, parse_selection, parse_since, sse_event

STATUS = {
    "kind": "status",
    "id": 41,
    "task": 7,
    "owner": "alice",
    "task_type": "countdown",
    "from": "queued",
    "to": "running",
    "at": "2026-01-01T00:00:00Z",
    "actor": "worker:1",
    "reason": "claimed",
}
PROGRESS = {
    "kind": "progress",
    "id": None,
    "task": 7,
    "owner": "alice",
    "task_type": "countdown",
    "progress": {"done": 1, "total": 2, "message": "line\nbreak"},
}


def refusal(fn: Any, *args: Any) -> Refusal:
    with pytest.raises(Refusal) as caught:
        fn(*args)
    return caught.value


# -- tasks= ------------------------------------------------------------------------------
def test_tasks_are_ids_mine_or_all_comma_separated_and_repeatable() -> None:
    assert parse_selection(["7,8", "9"]) == Selection(frozenset({7, 8, 9}))
    assert parse_selection(["mine"]) == Selection(mine=True)
    assert parse_selection(["all"]) == Selection(everything=True)
    assert parse_selection([" 7 , mine"]) == Selection(frozenset({7}), mine=True)
    assert parse_selection(["007"]) == Selection(frozenset({7}))


def test_no_tasks_means_mine() -> None:
    assert parse_selection([]) == Selection(mine=True)


@pytest.mark.parametrize("value", ["", "7,", "x", "-1", "7.0", "1e3", "7;8", "MINE", "9" * 19])
def test_a_bad_tasks_value_is_400_invalid_naming_tasks(value: str) -> None:
    r = refusal(parse_selection, [value])
    assert (r.status, r.code) == (400, "invalid")
    assert r.message.startswith("tasks: ")
    assert set(r.extra["fields"]) == {"tasks"}


def test_more_than_1000_task_ids_is_400() -> None:
    assert len(parse_selection([",".join(map(str, range(1, 1001)))]).tasks) == 1000
    r = refusal(parse_selection, [",".join(map(str, range(1, 100_001)))])
    assert (r.status, r.code) == (400, "invalid")
    assert "1,000" in r.message


def test_pipelines_are_ids_and_follow_only_themselves_unless_tasks_are_named() -> None:
    assert parse_selection([], ["3,4", "5"]) == Selection(pipelines=frozenset({3, 4, 5}))
    assert parse_selection(["mine"], ["3"]) == Selection(mine=True, pipelines=frozenset({3}))
    assert parse_selection(["7"], []) == Selection(frozenset({7}))
    assert len(parse_selection([], [",".join(map(str, range(1, 1001)))]).pipelines) == 1000


@pytest.mark.parametrize("value", ["", "3,", "mine", "all", "x", "-1", "9" * 19])
def test_a_bad_pipelines_value_is_400_invalid_naming_pipelines(value: str) -> None:
    r = refusal(parse_selection, [], [value])
    assert (r.status, r.code, list(r.extra["fields"])) == (400, "invalid", ["pipelines"])
    assert r.message.startswith("pipelines: ")
    r = refusal(parse_selection, [], [",".join(map(str, range(1, 1002)))])
    assert "1,000" in r.message


def test_query_string_limits() -> None:
    assert sse_format.query_params(b"tasks=7%2C8&since=3&x") == {
        "tasks": ["7,8"],
        "since": ["3"],
        "x": [""],
    }
    assert refusal(sse_format.query_params, b"tasks=%ff").status == 400
    r = refusal(sse_format.query_params, b"&".join([b"a=1"] * 1001))
    assert (r.status, r.code) == (400, "too_many_fields")


# -- Last-Event-ID and since ---------------------------------------------------------------
def test_last_event_id_wins_over_since() -> None:
    assert parse_since(None, []) is None
    assert parse_since(None, ["12"]) == 12
    assert parse_since("40", ["12"]) == 40  # EventSource reconnects with the original URL
    assert parse_since("  ", ["12"]) == 12  # an empty header is no header
    assert parse_since("0", []) == 0


@pytest.mark.parametrize(
    ("header", "since", "name"),
    [("x", [], "Last-Event-ID"), (None, ["-3"], "since"), (None, [""], "since")],
)
def test_a_bad_resume_point_is_400_invalid_naming_it(
    header: str | None, since: list[str], name: str
) -> None:
    r = refusal(parse_since, header, since)
    assert (r.status, r.code, list(r.extra["fields"])) == (400, "invalid", [name])


# -- events on the wire ----------------------------------------------------------------
def parse_sse(text: str) -> list[dict[str, str]]:
    """Events as an EventSource reads them: field lines up to a blank line."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = fields.get(name, "") + value
        if fields:
            out.append(fields)
    return out


def test_a_status_event_has_its_id_kind_and_the_event_as_data() -> None:
    text = sse_event(encode(STATUS))
    assert text.endswith("\n\n") and text.count("\n") == 4
    [event] = parse_sse(text)
    assert event["id"] == "41" and event["event"] == "status"
    assert json.loads(event["data"]) == STATUS


def test_a_progress_event_has_no_id_and_no_raw_newline_in_data() -> None:
    text = sse_event(encode(PROGRESS))
    assert "id:" not in text and text.count("\n") == 3
    [event] = parse_sse(text)
    assert event["event"] == "progress"
    assert json.loads(event["data"]) == PROGRESS


def test_a_pipeline_event_has_its_kind_and_no_id() -> None:
    change = {"kind": "pipeline", "id": None, "pipeline": 4, "owner": "alice", "name": "p"}
    text = sse_event(encode({**change, "from": "queued", "to": "running", "event": 9}))
    assert "id:" not in text
    [event] = parse_sse(text)
    assert event["event"] == "pipeline"
    assert json.loads(event["data"])["event"] == 9


def test_a_frame_laid_out_otherwise_is_read_as_json() -> None:
    frame = json.dumps({"task": 7, "kind": "status", "id": 5, "type": "event", "to": "paused"})
    [event] = parse_sse(sse_event(frame))
    assert event["id"] == "5" and event["event"] == "status"
    assert json.loads(event["data"]) == {"task": 7, "kind": "status", "id": 5, "to": "paused"}


def test_the_opening_sets_retry_and_the_start_id_without_an_event() -> None:
    assert sse_format.opening(57) == b"retry: 2000\nid: 57\n\n"


# -- the pump ----------------------------------------------------------------------------
class Client:
    """An ASGI client in memory: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.ended = False
        self.got = asyncio.Event()
        self._gone = asyncio.Event()
        self._asked_body = False

    async def receive(self) -> dict[str, Any]:
        if not self._asked_body:
            self._asked_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Any) -> None:
        assert message["type"] == "http.response.body"
        self.sent.append(message["body"])
        self.ended = not message.get("more_body", False)
        self.got.set()

    def disconnect(self) -> None:
        self._gone.set()

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(5):
            while text not in self.text:
                self.got.clear()
                await self.got.wait()

    @property
    def text(self) -> str:
        return b"".join(self.sent).decode()


def replay_of(frames: list[str]) -> Any:
    async def load(replay: Replay) -> tuple[list[str], Replay | None]:
        return frames, None

    return load


def test_pump_sends_replay_then_live_frames_and_ends_on_disconnect() -> None:
    async def main() -> Client:
        from django.db.models import Q

        client = Client()
        sub = Subscriber(1, False, asyncio.get_running_loop())
        sub.push_replay(Replay(0, 41, Q()))
        load = replay_of([encode(STATUS)])
        task = asyncio.ensure_future(
            sse.pump(sub, load, client.receive, client.send, asyncio.Event())
        )
        await client.wait_for("id: 41")
        sub.push_progress(7, encode(PROGRESS))
        sub.wake()
        await client.wait_for("event: progress")
        client.disconnect()
        await asyncio.wait_for(task, 5)
        return client

    client = asyncio.run(main())
    assert [e["event"] for e in parse_sse(client.text)] == ["status", "progress"]
    assert not client.ended  # the client is gone: nothing more was sent


def test_pump_pings_when_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "PING_SECONDS", 0.01)

    async def main() -> Client:
        client = Client()
        sub = Subscriber(1, False, asyncio.get_running_loop())
        task = asyncio.ensure_future(
            sse.pump(sub, replay_of([]), client.receive, client.send, asyncio.Event())
        )
        await client.wait_for(": ping\n\n")
        client.disconnect()
        await asyncio.wait_for(task, 5)
        return client

    assert asyncio.run(main()).text.startswith(": ping\n\n")


def test_pump_ends_the_stream_on_overflow() -> None:
    async def main() -> Client:
        client = Client()
        sub = Subscriber(1, False, asyncio.get_running_loop(), limit=2)
        for i in range(3):
            sub.push_status(encode({**STATUS, "id": i}))
        await asyncio.wait_for(
            sse.pump(sub, replay_of([]), client.receive, client.send, asyncio.Event()), 5
        )
        return client

    client = asyncio.run(main())
    assert client.ended and "too far behind" in client.text and "event:" not in client.text


def test_close_all_ends_every_open_stream() -> None:
    async def main() -> Client:
        client = Client()
        sub = Subscriber(1, False, asyncio.get_running_loop())
        stop = sse.streams.open(1)
        try:
            task = asyncio.ensure_future(
                sse.pump(sub, replay_of([]), client.receive, client.send, stop)
            )
            sse.streams.close_all()
            await asyncio.wait_for(task, 5)
        finally:
            sse.streams.close(stop)
        return client

    client = asyncio.run(main())
    assert client.ended and "server stopping" in client.text


def test_pump_ends_the_stream_when_the_credential_no_longer_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "RECHECK_SECONDS", 0.01)
    checks: list[bool] = [True, True, False]

    async def still_allowed() -> bool:
        return checks.pop(0)

    async def main() -> Client:
        client = Client()
        sub = Subscriber(1, False, asyncio.get_running_loop())
        await asyncio.wait_for(
            sse.pump(
                sub, replay_of([]), client.receive, client.send, asyncio.Event(), still_allowed
            ),
            5,
        )
        return client

    client = asyncio.run(main())
    assert client.ended and "no longer valid" in client.text and checks == []


def test_a_user_holds_at_most_64_streams() -> None:
    async def main() -> None:
        streams = sse.Streams()
        held = [streams.open(1) for _ in range(streams_per_user())]
        with pytest.raises(Refusal) as caught:
            streams.open(1)
        assert (caught.value.status, caught.value.code) == (429, "too_many_streams")
        other = streams.open(2)  # another user is not counted with them
        streams.close(held.pop())
        held.append(streams.open(1))
        assert len(streams) == streams_per_user() + 1
        for stop in [*held, other]:
            streams.close(stop)
        assert len(streams) == 0

    asyncio.run(main())


def test_an_unexpected_failure_before_the_stream_is_a_json_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken(scope: Any) -> Any:
        raise RuntimeError("database down")

    monkeypatch.setattr(sse, "admit", broken)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(sse.events_app({"type": "http", "method": "GET"}, receive, send))
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"]) == {
        "error": {"code": "server_error", "message": "internal error; see the server log"}
    }
