"""The cross-process event wire: JSON messages that round-trip every field, split to a
size bound, and refuse what is not ours; the publisher's bounded buffer."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from kombu import Connection

from tether.events.records import ProgressUpdate
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


def test_a_full_buffer_drops_progress_first_then_the_oldest_statuses() -> None:
    pub = publisher(limit=4)
    pub([progress(1), progress(2), change(1), change(2)])
    pub([change(3)])  # over by one: the oldest progress goes
    assert pub.dropped == 1
    pub([change(4), change(5), change(6)])  # the other progress, then statuses 1 and 2
    assert pub.dropped == 4
    assert pub.take() == [change(3), change(4), change(5), change(6)]
