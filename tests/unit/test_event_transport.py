"""The cross-process event wire: JSON messages that round-trip every field, split to a
size bound, and refuse what is not ours; the publisher's bounded buffer; the public
form of the events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kombu import Connection

from tether.events.records import (
    PipelineUpdate,
    ProgressUpdate,
    pipeline_event,
    progress_event,
    status_event,
    to_wire,
)
from tether.events.transport import Publisher
from tether.events.wire import MAX_MESSAGE_BYTES, decode, encode
from tether.states import Status
from tether.transitions import Change

AT = datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC)


def change(eid: int, task: int = 7) -> Change:
    return Change(task, Status.RUNNING, Status.PAUSING, "requested", eid, 3, "countdown", AT, "u:a")


def progress(task: int = 7, done: int = 1) -> ProgressUpdate:
    figures = {"done": done, "total": 10, "unit": "rows", "percent": done * 10.0, "rate": 2.5}
    return ProgressUpdate(task, {**figures, "eta_seconds": 3.6, "message": "héllo ✓"})


def test_status_and_progress_round_trip_every_field() -> None:
    items: list[Any] = [
        change(41),
        Change(8, None, Status.QUEUED, "", 42, 3, "add", AT, "user:bob"),
        progress(),
        ProgressUpdate(9, {"done": 0}),  # a worker's progress save: no owner, no type
    ]
    [body] = encode("here", items)
    assert decode(body) == ("here", items)
    assert json.loads(body)["v"] == 1  # plain JSON, nothing pickled


def pipeline(eid: int, dst: Status = Status.RUNNING, pid: int = 4) -> PipelineUpdate:
    return PipelineUpdate(pid, 3, "sentinel", Status.QUEUED, dst, AT, "u:a", "a step runs", eid)


def test_pipeline_changes_and_a_steps_pipeline_round_trip() -> None:
    items: list[Any] = [
        Change(8, Status.QUEUED, Status.RUNNING, "claimed", 43, 3, "it_step", AT, "w:1", 4),
        PipelineUpdate(4, 3, "p", None, Status.QUEUED, AT, "user:a", "submitted", 9, (8, 9)),
        pipeline(10),
    ]
    [body] = encode("here", items)
    assert decode(body) == ("here", items)
    assert "l" not in to_wire(change(1))  # a task outside pipelines pays nothing for them


def test_a_pipeline_item_a_process_cannot_read_is_left_out() -> None:
    wire = json.loads(encode("o", [pipeline(3)])[0])["items"][0]
    assert "t" not in wire  # an older server, which reads "t", leaves it out
    bad = [
        {**wire, "d": "exploded"},
        {**wire, "e": None},
        {**wire, "a": None},
        {**wire, "k": "7"},
        {**wire, "o": None},
    ]
    body = json.dumps({"v": 1, "origin": "o", "items": [*bad, wire]})
    assert decode(body) == ("o", [pipeline(3)])


def test_the_public_form_of_each_kind() -> None:
    step = Change(8, None, Status.QUEUED, "submitted", 43, 3, "it_step", AT, "pipeline:4", 4)
    assert status_event(step, "alice") == {
        "kind": "status", "id": 43, "task": 8, "owner": "alice", "task_type": "it_step",
        "from": None, "to": "queued", "at": "2026-03-01T12:30:05.123456Z",
        "actor": "pipeline:4", "reason": "submitted", "pipeline": 4,
    }  # fmt: skip
    assert status_event(change(1), "alice")["pipeline"] is None
    assert set(progress_event(progress(), "alice")) == {
        "kind", "id", "task", "owner", "task_type", "at", "progress"
    }  # fmt: skip
    created = PipelineUpdate(4, 3, "p", None, Status.QUEUED, AT, "user:a", "submitted", 9, (8,))
    assert pipeline_event(created, "alice") == {
        "kind": "pipeline", "id": None, "pipeline": 4, "owner": "alice", "name": "p",
        "from": None, "to": "queued", "at": "2026-03-01T12:30:05.123456Z",
        "actor": "user:a", "reason": "submitted", "event": 9, "tasks": [8],
    }  # fmt: skip
    assert json.dumps(pipeline_event(pipeline(10), "a"))  # plain JSON


def test_a_big_batch_is_split_into_bounded_messages_in_order() -> None:
    items = [change(i) for i in range(1, 2001)]
    bodies = encode("here", items, limit=8192)
    assert len(bodies) > 1
    assert all(len(b) <= 8192 for b in bodies)
    back = [item for b in bodies for item in (decode(b) or ("", []))[1]]
    assert back == items


def test_an_item_too_big_for_any_message_is_left_out_alone() -> None:
    huge = ProgressUpdate(7, {"message": "x" * 10_000})
    bodies = encode("here", [change(1), huge, change(2)], limit=4096)
    assert [item for b in bodies for item in (decode(b) or ("", []))[1]] == [change(1), change(2)]


def test_progress_that_is_not_json_is_left_out() -> None:
    [body] = encode("here", [ProgressUpdate(7, {"rate": float("nan")}), change(1)])
    assert decode(body) == ("here", [change(1)])


def test_what_is_not_a_message_of_ours_is_refused() -> None:
    good = encode("here", [change(1)])[0]
    assert decode(good) is not None
    assert decode(good.decode()) is not None  # str bodies too
    too_big = good[:-2] + b"," + b" " * MAX_MESSAGE_BYTES + b"]}"
    for body in (
        too_big,
        b"\x80\x04\x95pickle",
        b"[]",
        b'{"v": 2, "origin": "x", "items": []}',
        b'{"v": 1, "items": []}',
        b'{"v": 1, "origin": "x", "items": {}}',
        b"[" * 100_000,
    ):
        assert decode(body) is None, body[:40]


def test_malformed_items_are_skipped_and_the_rest_kept() -> None:
    wire = json.loads(encode("o", [change(5)])[0])["items"][0]
    bad = [
        "text",
        {"t": "seven"},
        {**wire, "d": "exploded"},
        {**wire, "e": None},
        {"t": 1, "p": [1, 2]},
        {**wire, "a": "not a time"},
    ]
    body = json.dumps({"v": 1, "origin": "o", "items": [*bad, wire]})
    assert decode(body) == ("o", [change(5)])


def publisher(limit: int = 10) -> Publisher:
    """Never started: only its buffer is used."""
    return Publisher(lambda: Connection("memory://"), origin="here", limit=limit)


def test_the_buffer_keeps_each_tasks_latest_progress_after_the_statuses() -> None:
    pub = publisher()
    pub([progress(7, 1), change(1), progress(8, 1)])
    pub([progress(7, 2), change(2), Change(7, Status.RUNNING, Status.QUEUED, "", None)])
    assert pub.take() == [change(1), change(2), progress(7, 2), progress(8, 1)]
    assert pub.take() == []


def test_the_buffer_keeps_every_pipeline_change_in_order_among_the_statuses() -> None:
    pub = publisher()
    pub([change(1), pipeline(5, Status.RUNNING), progress(7, 1)])
    pub([pipeline(6, Status.PAUSING), change(2), pipeline(7, Status.PAUSED)])
    assert pub.take() == [
        change(1), pipeline(5, Status.RUNNING), pipeline(6, Status.PAUSING), change(2),
        pipeline(7, Status.PAUSED), progress(7, 1),
    ]  # fmt: skip


def test_a_full_buffer_drops_progress_first_then_the_oldest_statuses() -> None:
    pub = publisher(limit=4)
    pub([progress(1), progress(2), change(1), change(2)])
    pub([change(3)])  # over by one: the oldest progress goes
    assert pub.dropped == 1
    pub([change(4), change(5), change(6)])  # the other progress, then statuses 1 and 2
    assert pub.dropped == 4
    assert pub.take() == [change(3), change(4), change(5), change(6)]
