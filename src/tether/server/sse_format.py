"""What the event stream endpoint (``tether.server.sse``) reads and writes: the
``tasks``, ``pipelines``, ``since`` and ``Last-Event-ID`` of a request, the refusals they earn (JSON
errors as REST words them), and the hub's frames as Server-Sent Events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

RETRY_MS = 2000  # how long EventSource waits before it reconnects
MAX_TASKS = 1000  # task ids in one stream, and apart pipeline ids
MAX_FIELDS = 1000  # query fields, as Django allows REST requests
ID_RE = re.compile(r"[0-9]{1,18}")
PING = b": ping\n\n"


class Refusal(Exception):
    """An answer instead of a stream: ``{"error": {"code", "message", ...}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)
        self.extra = extra


def invalid(name: str, message: str) -> Refusal:
    """400 ``invalid`` as REST words it: the message, and ``fields`` naming the input."""
    return Refusal(400, "invalid", f"{name}: {message}", fields={name: [message]})


@dataclass(frozen=True)
class Selection:
    """What a stream follows: these tasks, the user's own ("mine"), or all (staff); and
    these pipelines."""

    tasks: frozenset[int] = field(default_factory=frozenset)
    mine: bool = False
    everything: bool = False
    pipelines: frozenset[int] = field(default_factory=frozenset)


def query_params(query_string: bytes) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(
            query_string.decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError:
        raise Refusal(400, "bad_request", "the query string is not valid UTF-8") from None
    except ValueError:
        raise Refusal(400, "too_many_fields", "too many query or form fields") from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def parse_selection(values: list[str], pipelines: list[str] | None = None) -> Selection:
    """``tasks=7,8``, ``tasks=mine``, ``tasks=all`` (repeatable, mixable) and
    ``pipelines=3,4``; neither given means ``mine``."""
    followed = parse_pipelines(pipelines or [])
    if not values:
        return Selection(mine=not followed, pipelines=followed)
    ids: set[int] = set()
    mine = everything = False
    for value in values:
        for raw in value.split(","):
            item = raw.strip()
            if item == "mine":
                mine = True
            elif item == "all":
                everything = True
            elif ID_RE.fullmatch(item):
                ids.add(int(item))
                if len(ids) > MAX_TASKS:
                    raise invalid("tasks", f"at most {MAX_TASKS:,} task ids in one stream")
            else:
                shown = item if len(item) <= 20 else item[:20] + "…"
                raise invalid(
                    "tasks",
                    f"{shown!r} is not a task id, 'mine' or 'all' (comma-separated: tasks=7,8)",
                )
    return Selection(frozenset(ids), mine, everything, followed)


def parse_pipelines(values: list[str]) -> frozenset[int]:
    """``pipelines=3,4`` (repeatable)."""
    ids: set[int] = set()
    for value in values:
        for raw in value.split(","):
            item = raw.strip()
            if not ID_RE.fullmatch(item):
                shown = item if len(item) <= 20 else item[:20] + "…"
                raise invalid(
                    "pipelines", f"{shown!r} is not a pipeline id (comma-separated: pipelines=3,4)"
                )
            ids.add(int(item))
            if len(ids) > MAX_TASKS:
                raise invalid("pipelines", f"at most {MAX_TASKS:,} pipeline ids in one stream")
    return frozenset(ids)


def parse_since(last_event_id: str | None, since: list[str]) -> int | None:
    """Where to resume: the ``Last-Event-ID`` header (what EventSource sends when it
    reconnects, so it wins over the URL's ``since``), else ``?since=``."""
    if last_event_id is not None and last_event_id.strip():
        raw, name = last_event_id.strip(), "Last-Event-ID"
    elif since:
        raw, name = since[-1].strip(), "since"
    else:
        return None
    if not ID_RE.fullmatch(raw):
        raise invalid(name, "must be an event id (a whole number from 0)")
    return int(raw)


# The hub encodes each frame once, for WebSocket clients: {"type":"event", ...event}
# with kind and id first. Read those two from the front instead of parsing the JSON.
FRAME_PREFIX = '{"type":"event",'
FRAME_HEAD = re.compile(r'\{"type":"event","kind":"(status|progress|pipeline)","id":([0-9]+|null),')


def sse_event(frame: str) -> str:
    """One hub frame as an SSE event: the event's JSON (without the WebSocket
    ``"type"``) in ``data:``, its kind in ``event:``, a status event's id in ``id:``."""
    head = FRAME_HEAD.match(frame)
    if head is not None:
        kind, event_id = head[1], head[2]
        data = "{" + frame[len(FRAME_PREFIX) :]
    else:  # not laid out as expected: read it properly
        event = json.loads(frame)
        event.pop("type", None)
        kind, event_id = str(event.get("kind")), event.get("id")
        data = json.dumps(event, separators=(",", ":"))
    id_line = f"id: {event_id}\n" if kind == "status" and event_id not in (None, "null") else ""
    return f"{id_line}event: {kind}\ndata: {data}\n\n"


def opening(start: int) -> bytes:
    """The first bytes: reconnect delay, and the id the stream starts after (an event
    with no data sets EventSource's last event id without firing)."""
    return f"retry: {RETRY_MS}\nid: {start}\n\n".encode()
