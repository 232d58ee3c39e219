"""``GET /api/v1/events``: the event stream as Server-Sent Events, for curl and EventSource.

An async ASGI handler, so a stream holds no thread while it waits. The request is
checked as a REST one is (Host, token or session cookie, the tasks the user may see)
and refused with a JSON error before the stream starts. Then a hub ``Subscriber``
feeds it: the stored status events after ``Last-Event-ID`` (or ``?since=``) first,
then live ones, none missed and none twice (the hub's ``subscribe`` does that).

Each status event is ``id: <event id>``, ``event: status``, ``data: <json>``; progress
events have no ``id:`` (they are not stored, so not replayed) and so leave the
client's last event id alone. The stream opens with ``retry:`` and an ``id:`` of where
it starts, so even a client cut off before its first event resumes without a gap. A
comment (``: ping``) goes out after 20 s of silence, so proxies keep the connection.
A client that reads too slowly overflows its subscriber's bounded queue: the stream
ends and the client comes back with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http.request import split_domain_port, validate_host

from tether.api.errors import suspicious
from tether.events.hub import Hub, get_hub
from tether.events.subscriber import LoadReplay, Overflow, Subscriber
from tether.server import scope_auth

log = logging.getLogger("tether.sse")

PING_SECONDS = 20.0  # a comment after this long without a byte sent
RETRY_MS = 2000  # how long EventSource waits before it reconnects
MAX_TASKS = 1000  # task ids in one stream
MAX_FIELDS = 100  # query parameters
ID_RE = re.compile(r"[0-9]{1,18}")
PING = b": ping\n\n"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on, do not buffer
    (b"x-content-type-options", b"nosniff"),
]


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
    """What a stream follows: these tasks, the user's own ("mine"), or all (staff)."""

    tasks: frozenset[int] = field(default_factory=frozenset)
    mine: bool = False
    everything: bool = False


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


def parse_selection(values: list[str]) -> Selection:
    """``tasks=7,8``, ``tasks=mine``, ``tasks=all`` (repeatable, mixable); none given
    means ``mine``."""
    if not values:
        return Selection(mine=True)
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
    return Selection(frozenset(ids), mine, everything)


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
FRAME_HEAD = re.compile(r'\{"type":"event","kind":"(status|progress)","id":([0-9]+|null),')


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


async def refuse(send: Send, refusal: Refusal) -> None:
    body = json.dumps(
        {"error": {"code": refusal.code, "message": refusal.message, **refusal.extra}}
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        *refusal.headers,
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def body_then_disconnect(receive: Receive) -> None:
    """Read the request body (a GET has none worth keeping), then wait for the client
    to go."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Streams:
    """The open streams of this process, so the server can end them when it stops
    (uvicorn waits for open responses before it exits)."""

    def __init__(self) -> None:
        self._open: set[asyncio.Event] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, stop: asyncio.Event) -> None:
        self._open.add(stop)

    def discard(self, stop: asyncio.Event) -> None:
        self._open.discard(stop)

    def close_all(self) -> None:
        """End every open stream (call in the server's event loop); clients reconnect
        with Last-Event-ID."""
        for stop in list(self._open):
            stop.set()


streams = Streams()


async def pump(
    sub: Subscriber,
    load: LoadReplay,
    receive: Receive,
    send: Send,
    stop: asyncio.Event,
) -> None:
    """Send the subscriber's frames until the client goes, the queue overflows or the
    server stops; a ping after each ``PING_SECONDS`` of silence. Never cancels a
    ``frames()`` call that is running (it may be reading a replay page)."""
    gone: asyncio.Future[Any] = asyncio.ensure_future(body_then_disconnect(receive))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    frames: asyncio.Future[Any] = asyncio.ensure_future(sub.frames(load))
    try:
        while True:
            done, _ = await asyncio.wait(
                {gone, stopping, frames}, timeout=PING_SECONDS, return_when="FIRST_COMPLETED"
            )
            if gone in done:
                return
            if frames in done:
                try:
                    batch = frames.result()
                except Overflow:
                    await send(chunk(b": overflow: reconnect with Last-Event-ID\n\n"))
                    break
                except Exception:  # e.g. the database failed a replay page
                    log.exception("event stream failed; ending it (the client resumes)")
                    break
                await send(chunk("".join(sse_event(f) for f in batch).encode()))
                frames = asyncio.ensure_future(sub.frames(load))
            elif stopping in done:
                await send(chunk(b": server stopping: reconnect with Last-Event-ID\n\n"))
                break
            else:
                await send(chunk(PING))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        for task in (gone, stopping, frames):
            task.cancel()
        await asyncio.gather(gone, stopping, frames, return_exceptions=True)


def chunk(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


# -- the endpoint ------------------------------------------------------------------------
WWW_AUTHENTICATE = (b"www-authenticate", b"Token")
ALLOW = (b"allow", b"GET, OPTIONS")


def host_allowed(scope: scope_auth.Scope) -> bool:
    """The Host check Django makes of every request (TETHER_ALLOWED_HOSTS)."""
    host = (scope_auth.header(scope, b"host") or b"").decode("latin-1")
    domain, _port = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def invisible(user: Any, task_ids: frozenset[int]) -> list[int]:
    """The ids of ``task_ids`` that ``user`` may not see (or that do not exist)."""
    from tether.service import visible_tasks

    wanted = sorted(task_ids)
    seen: set[int] = set()
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        seen.update(visible_tasks(user).filter(id__in=part).values_list("id", flat=True))
    return [t for t in wanted if t not in seen]


async def admit(scope: scope_auth.Scope) -> tuple[Any, Selection, int | None]:
    """Who asks, for what, from where: the REST API's checks and answers, in its order
    (Host, credentials, input, permission, tasks), or a Refusal."""
    if not host_allowed(scope):
        _status, body = suspicious(DisallowedHost())
        raise Refusal(400, body["error"]["code"], body["error"]["message"])
    if not scope_auth.origin_allowed(scope):
        raise Refusal(
            403, "origin_not_allowed", "pages of that origin may not open the event stream"
        )
    try:
        user = await scope_auth.scope_user(scope)
    except scope_auth.AuthFailed as exc:
        raise Refusal(401, "authentication_failed", exc.message, [WWW_AUTHENTICATE]) from None
    if user is None:
        raise Refusal(
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
            [WWW_AUTHENTICATE],
        )
    params = query_params(scope.get("query_string", b""))
    selection = parse_selection(params.get("tasks", []))
    last_event_id = scope_auth.header(scope, b"last-event-id")
    since = parse_since(
        last_event_id.decode("latin-1") if last_event_id is not None else None,
        params.get("since", []),
    )
    if selection.everything and not user.is_staff:
        raise Refusal(403, "permission_denied", "only staff may follow all tasks (tasks=all)")
    if selection.tasks:
        missing = await scope_auth.in_db_thread(invisible, user, selection.tasks)
        if missing:
            raise Refusal(404, "not_found", f"no task {missing[0]}")
    return user, selection, since


async def events_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI application of ``/api/v1/events``."""
    method = scope.get("method", "GET")
    if method == "OPTIONS":
        headers = [ALLOW, (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    try:
        if method != "GET":
            raise Refusal(405, "method_not_allowed", f'Method "{method}" not allowed.', [ALLOW])
        user, selection, since = await admit(cast(scope_auth.Scope, scope))
        hub = await scope_auth.in_db_thread(get_hub)  # started on first use: reads the DB
    except Refusal as refusal:
        await refuse(send, refusal)
        return
    await stream(
        hub,
        Subscriber(user.id, user.is_staff, asyncio.get_running_loop()),
        selection,
        since,
        receive,
        send,
    )


async def stream(
    hub: Hub,
    sub: Subscriber,
    selection: Selection,
    since: int | None,
    receive: Receive,
    send: Send,
) -> None:
    stop = asyncio.Event()
    streams.add(stop)
    try:
        upto = hub.subscribe(
            sub,
            tasks=selection.tasks,
            mine=selection.mine,
            everything=selection.everything,
            since=since,
        )
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        await send(chunk(opening(since if since is not None else upto)))
        await pump(sub, hub.load_replay, receive, send, stop)
    finally:
        hub.detach(sub)
        streams.discard(stop)
