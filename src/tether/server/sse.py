"""``GET /api/v1/events``: the event stream as Server-Sent Events, for curl and EventSource.

An async ASGI handler, so a stream holds no thread while it waits. The request is
checked as a REST one is (Host, token or session cookie, the tasks and pipelines the
user may see)
and refused with a JSON error before the stream starts. Then a hub ``Subscriber``
feeds it: the stored status events after ``Last-Event-ID`` (or ``?since=``) first,
then live ones, none missed and none twice (the hub's ``subscribe`` does that).

Each status event is ``id: <event id>``, ``event: status``, ``data: <json>``; progress
events have no ``id:`` (they are not stored, so not replayed) and so leave the
client's last event id alone. The stream opens with ``retry:`` and an ``id:`` of where
it starts, so even a client cut off before its first event resumes without a gap. A
comment (``: ping``) goes out after 20 s of silence, so proxies keep the connection.
A client that reads too slowly overflows its subscriber's bounded queue: the stream
ends and the client comes back with ``Last-Event-ID``. So does every stream when the
server stops, and one whose token or session is no longer good (checked every minute,
as REST checks each request's). A user may hold TETHER_STREAMS_PER_USER (64) streams at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http.request import split_domain_port, validate_host

from tether.api.errors import suspicious
from tether.events.hub import Hub, SinceAhead, get_hub
from tether.events.subscriber import (
    LoadReplay,
    Overflow,
    Subscriber,
    event_queue_limit,
    streams_per_user,
)
from tether.server import scope_auth
from tether.server.sse_format import (
    PING,
    Refusal,
    Selection,
    opening,
    parse_selection,
    parse_since,
    query_params,
    sse_event,
)

log = logging.getLogger("tether.sse")

PING_SECONDS = 20.0  # a comment after this long without a byte sent
RECHECK_SECONDS = 60.0  # between checks of the stream's token or session

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Check = Callable[[], Awaitable[bool]]

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on, do not buffer
    (b"x-content-type-options", b"nosniff"),
]
WWW_AUTHENTICATE = (b"www-authenticate", b"Token")
ALLOW = (b"allow", b"GET, OPTIONS")
OVERFLOWED = b": too far behind: reconnect with Last-Event-ID\n\n"
STOPPING = b": server stopping: reconnect with Last-Event-ID\n\n"
REVOKED = b": the token or session is no longer valid\n\n"


class Streams:
    """This process's open streams: how many each user holds (a cap), and a stop event
    each, so the server can end them when it stops (uvicorn waits for open responses
    before it exits). Used from the server's event loop only."""

    def __init__(self) -> None:
        self._open: dict[asyncio.Event, int] = {}
        self._per_user: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, user_id: int) -> asyncio.Event:
        most = streams_per_user()
        if self._per_user[user_id] >= most:
            raise Refusal(
                429,
                "too_many_streams",
                f"at most {most} open event streams per user (TETHER_STREAMS_PER_USER); close one",
            )
        stop = asyncio.Event()
        self._open[stop] = user_id
        self._per_user[user_id] += 1
        return stop

    def close(self, stop: asyncio.Event) -> None:
        user_id = self._open.pop(stop, None)
        if user_id is not None:
            self._per_user[user_id] -= 1
            if not self._per_user[user_id]:
                del self._per_user[user_id]

    def close_all(self) -> None:
        """End every open stream; their clients reconnect with Last-Event-ID."""
        for stop in list(self._open):
            stop.set()


streams = Streams()


def chunk(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def body_then_disconnect(receive: Receive) -> None:
    """Read the request body (a GET has none worth keeping), then wait for the client
    to go."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def pump(
    sub: Subscriber,
    load: LoadReplay,
    receive: Receive,
    send: Send,
    stop: asyncio.Event,
    still_allowed: Check | None = None,
) -> None:
    """Send the subscriber's frames until the client goes, the queue overflows, the
    server stops or ``still_allowed`` (called every ``RECHECK_SECONDS``) says no; a ping
    after each ``PING_SECONDS`` of silence. Never cancels a ``frames()`` call that is
    running (it may hold a replay page it has taken from the queue)."""
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[Any] = asyncio.ensure_future(body_then_disconnect(receive))
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    frames: asyncio.Future[Any] = asyncio.ensure_future(sub.frames(load))
    last_sent = loop.time()
    next_check = last_sent + RECHECK_SECONDS
    try:
        while True:
            wake_at = min(last_sent + PING_SECONDS, next_check)
            done, _ = await asyncio.wait(
                {gone, stopping, frames},
                timeout=max(0.0, wake_at - loop.time()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if gone in done:
                return
            if frames in done:
                try:
                    batch = frames.result()
                except Overflow:
                    end = OVERFLOWED
                    break
                except Exception:  # e.g. the database failed a replay page
                    log.exception("event stream failed; ending it (the client resumes)")
                    end = b""
                    break
                await send(chunk("".join(sse_event(f) for f in batch).encode()))
                last_sent = loop.time()
                frames = asyncio.ensure_future(sub.frames(load))
            if stopping in done:
                end = STOPPING
                break
            if still_allowed is not None and loop.time() >= next_check:
                if not await still_allowed():
                    end = REVOKED
                    break
                next_check = loop.time() + RECHECK_SECONDS
            if loop.time() - last_sent >= PING_SECONDS:
                await send(chunk(PING))
                last_sent = loop.time()
        await send(chunk(end))
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        for task in (gone, stopping, frames):
            task.cancel()
        await asyncio.gather(gone, stopping, frames, return_exceptions=True)


# -- the endpoint ------------------------------------------------------------------------
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


def invisible_pipelines(user: Any, pipeline_ids: frozenset[int]) -> list[int]:
    """The ids of ``pipeline_ids`` that ``user`` may not see (or that do not exist)."""
    from tether.pipelines.control import visible

    wanted = sorted(pipeline_ids)
    seen = set(visible(user).filter(id__in=wanted).values_list("id", flat=True))
    return [p for p in wanted if p not in seen]


class Admitted:
    """A request that may have its stream: who, with what credential, following what,
    from where."""

    def __init__(
        self,
        user: Any,
        credential: scope_auth.Credential,
        selection: Selection,
        since: int | None,
    ) -> None:
        self.user = user
        self.credential = credential
        self.selection = selection
        self.since = since

    async def still_allowed(self) -> bool:
        """The credential still stands for the user (and staff, following all)."""
        try:
            user = await scope_auth.in_db_thread(self.credential.user)
        except scope_auth.AuthFailed:
            return False
        except Exception:  # e.g. the database is down: keep the stream, ask again later
            log.warning("could not check an event stream's credential", exc_info=True)
            return True
        return bool(user.pk == self.user.pk and (user.is_staff or not self.selection.everything))


async def admit(scope: scope_auth.Scope) -> Admitted:
    """REST's checks and answers, in its order: Host, credentials, input, permission,
    tasks; a Refusal otherwise."""
    if not host_allowed(scope):
        _status, body = suspicious(DisallowedHost())
        raise Refusal(400, body["error"]["code"], body["error"]["message"])
    if not scope_auth.origin_allowed(scope):
        raise Refusal(
            403, "origin_not_allowed", "pages of that origin may not open the event stream"
        )
    try:
        credential = scope_auth.scope_credential(scope)
        user = await scope_auth.in_db_thread(credential.user) if credential else None
    except scope_auth.AuthFailed as exc:
        raise Refusal(401, "authentication_failed", exc.message, [WWW_AUTHENTICATE]) from None
    if credential is None or user is None:
        raise Refusal(
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
            [WWW_AUTHENTICATE],
        )
    params = query_params(scope.get("query_string", b""))
    selection = parse_selection(params.get("tasks", []), params.get("pipelines", []))
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
    if selection.pipelines:
        missing = await scope_auth.in_db_thread(invisible_pipelines, user, selection.pipelines)
        if missing:
            raise Refusal(404, "not_found", f"no pipeline {missing[0]}")
    return Admitted(user, credential, selection, since)


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
        admitted = await admit(cast(scope_auth.Scope, scope))
        hub = await scope_auth.in_db_thread(get_hub)  # started on first use: reads the DB
        stop = streams.open(admitted.user.pk)  # no await since: the count is exact
    except Refusal as refusal:
        await refuse(send, refusal)
        return
    except Exception:  # e.g. the database is down: a JSON 500, as REST answers
        log.exception("Internal Server Error: %s", scope.get("path"))
        await refuse(send, Refusal(500, "server_error", "internal error; see the server log"))
        return
    try:
        await stream(hub, admitted, stop, receive, send)
    finally:
        streams.close(stop)


async def stream(
    hub: Hub, admitted: Admitted, stop: asyncio.Event, receive: Receive, send: Send
) -> None:
    user, selection, since = admitted.user, admitted.selection, admitted.since
    sub = Subscriber(user.pk, user.is_staff, asyncio.get_running_loop(), limit=event_queue_limit())
    try:
        try:
            upto = hub.subscribe(
                sub,
                tasks=selection.tasks,
                pipelines=selection.pipelines,
                mine=selection.mine,
                everything=selection.everything,
                since=since,
            )
        except SinceAhead as exc:
            await refuse(send, Refusal(400, "invalid", str(exc)))
            return
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        await send(chunk(opening(since if since is not None else upto)))
        await pump(sub, hub.load_replay, receive, send, stop, admitted.still_allowed)
    finally:
        hub.detach(sub)
