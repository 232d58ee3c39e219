"""``/ws/v1``: live events and the task commands over one WebSocket.

A connection is accepted, then checked: the Host header (as REST, else 4400), the
Origin (a page of another site is refused with 4403: the session cookie would
otherwise let it act as the user), the user (token header, session cookie, or a first
frame ``{"type": "auth", "token": …}`` within 5 s, else 4401) and the user's number of
connections (4429). Then the server says ``hello`` and answers requests in order;
events flow from the hub through a bounded ``Subscriber`` queue, so a client that
reads slowly only ever holds its own queue: past its limit it is closed with 4008
and resumes with ``since``. The credential is checked again with every request and
every minute, as REST checks each request's.

Close codes: 4400 bad Host, 4401 authentication, 4403 origin, 4404 no such endpoint,
4008 too far behind, 4429 too many connections, 1009 a frame over 1 MiB, 1011 server
error. Everything else a client gets wrong is an error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from django.conf import settings
from django.http.request import split_domain_port, validate_host

import tether
from tether import service
from tether.events.hub import Hub, SinceAhead, get_hub
from tether.events.subscriber import Overflow, Subscriber, event_queue_limit, streams_per_user
from tether.pipelines.control import visible as visible_pipelines
from tether.server import scope_auth
from tether.server import ws_commands as cmd
from tether.server.scope_auth import AuthFailed, Credential

log = logging.getLogger("tether.ws")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PING_INTERVAL = 20  # seconds between the server's {"type": "ping"} frames
AUTH_TIMEOUT = 5.0
RECHECK_INTERVAL = 60.0  # seconds between checks of the credential of an idle connection
RATE, BURST = 50.0, 100  # requests a second on one connection, and the burst allowed
CLOSE_TIMEOUT = 5.0  # a close frame the client does not take by then: drop the connection
PING = json.dumps({"type": "ping"})
SEND_BUFFER = 32 * 1024  # bytes waiting in the kernel, and apart in the transport

BAD_HOST, UNAUTHORIZED, FORBIDDEN_ORIGIN = 4400, 4401, 4403
TOO_SLOW, TOO_MANY_CONNECTIONS, SERVER_ERROR = 4008, 4429, 1011

_connections: Counter[int] = Counter()  # user id -> open connections (one event loop)


class Close(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:123].decode(errors="ignore")  # a close frame's limit


class ConnectionSubscriber(Subscriber):
    """A Subscriber that says when it overflows, so the connection closes (4008) even
    while its sender waits on a client that stopped reading."""

    def __init__(self, *args: Any, on_overflow: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_overflow = on_overflow
        self._told = False

    def push_status(self, *args: Any, **kwargs: Any) -> bool:
        wake = super().push_status(*args, **kwargs)
        if self.overflowed and not self._told:
            self._told = True
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to tell
                self.loop.call_soon_threadsafe(self.on_overflow)
        return wake


async def endpoint(scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await Connection(cast(scope_auth.Scope, scope), receive, send).run()


class Connection:
    def __init__(self, scope: scope_auth.Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self._send = send
        self.closed = False
        self.user: Any = None
        self.credential = Credential()
        self.hub: Hub | None = None
        self.sub: ConnectionSubscriber | None = None
        self.bucket = cmd.Bucket(RATE, BURST)
        self.checked_at = time.monotonic()
        self.tasks: list[asyncio.Task[None]] = []
        self.closing: asyncio.Task[None] | None = None  # a close begun outside run()
        host = (scope_auth.header(scope, b"host") or b"").decode("latin-1")
        proto = scope_auth.header(scope, b"x-forwarded-proto")
        client = scope.get("client") or ("", 0)
        self.peer = cmd.Peer(
            host=host,
            secure=scope.get("scheme") == "wss",
            client=str(client[0]),
            forwarded_proto=proto.decode("latin-1") if proto else None,
        )

    # -- sending ---------------------------------------------------------------------
    async def send_text(self, text: str) -> bool:
        """Send one frame; False when the connection is closed or gone."""
        if self.closed:
            return False
        try:
            await self._send({"type": "websocket.send", "text": text})
        except (OSError, RuntimeError):  # the client left; or we closed meanwhile
            return False
        return True

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        try:
            await asyncio.wait_for(
                self._send({"type": "websocket.close", "code": code, "reason": reason}),
                CLOSE_TIMEOUT,
            )
        except (TimeoutError, OSError, RuntimeError):
            self._abort()  # it does not read: its buffers are full

    def _abort(self) -> None:
        """Drop the connection at once, with what waits to be sent (a reset: closing
        the socket would leave the kernel holding its unsent megabytes). ASGI has no
        way to say so: this reaches for uvicorn's transport, if it is there."""
        protocol = getattr(self._send, "__self__", None)
        transport = getattr(protocol, "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    def _small_buffers(self) -> None:
        """Keep what waits between this server and a slow reader small, so that it
        waits here instead, where a task's progress is replaced by its latest figures:
        a reader that falls behind then gets fresh figures, not seconds-old ones from
        megabytes buffered in the kernel (which grows a socket's buffer to megabytes by
        default). Reaches for uvicorn's transport, if it is there."""
        protocol = getattr(self._send, "__self__", None)
        transport = getattr(protocol, "transport", None)
        if transport is None or not hasattr(transport, "set_write_buffer_limits"):
            return
        transport.set_write_buffer_limits(high=SEND_BUFFER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)

    # -- the connection's life -----------------------------------------------------------
    async def run(self) -> None:
        await self._send({"type": "websocket.accept"})
        self._small_buffers()
        counted = False
        try:
            self.user = await self.authenticate()
            if self.user is None:
                return  # left before authenticating
            most = streams_per_user()
            if _connections[self.user.pk] >= most:
                raise Close(
                    TOO_MANY_CONNECTIONS,
                    f"at most {most} connections a user (TETHER_STREAMS_PER_USER); close one",
                )
            _connections[self.user.pk] += 1
            counted = True
            self.hub = await scope_auth.in_db_thread(get_hub)
            self.sub = ConnectionSubscriber(
                self.user.pk,
                self.user.is_staff,
                asyncio.get_running_loop(),
                limit=event_queue_limit(),
                on_overflow=self._overflowed,
            )
            hello = {
                "type": "hello",
                "user": self.user.get_username(),
                "server": tether.__version__,
                "ping_interval": PING_INTERVAL,
            }
            if not await self.send_text(cmd.encode(hello)):
                return
            self.tasks = [asyncio.create_task(self._events()), asyncio.create_task(self._pings())]
            await self._requests()
        except Close as exc:
            await self.close(exc.code, exc.reason)
        except Exception:
            log.exception("WebSocket connection failed")
            await self.close(SERVER_ERROR, "internal error; see the server log")
        finally:
            self.closed = True
            for task in self.tasks:
                task.cancel()
            if self.closing is not None:
                await self.closing  # its close frame, or dropping the connection
            if self.hub is not None and self.sub is not None:
                self.hub.detach(self.sub)
            if counted:
                _connections[self.user.pk] -= 1
                if not _connections[self.user.pk]:
                    del _connections[self.user.pk]

    async def authenticate(self) -> Any:
        host = self.peer.host
        domain, _ = split_domain_port(host)
        if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
            raise Close(BAD_HOST, "this server does not answer to that Host (TETHER_ALLOWED_HOSTS)")
        if not scope_auth.origin_allowed(self.scope):
            raise Close(FORBIDDEN_ORIGIN, "origin not allowed (TETHER_ALLOWED_ORIGINS)")
        try:
            credential = scope_auth.scope_credential(self.scope)
            if credential is None:
                token = await self._auth_frame()
                if token is None:
                    return None
                credential = Credential(token=token)
            self.credential = credential
            return await scope_auth.in_db_thread(credential.user)
        except AuthFailed as exc:
            raise Close(UNAUTHORIZED, exc.message) from None

    async def _auth_frame(self) -> str | None:
        """The token of the first frame, which must come within AUTH_TIMEOUT."""
        try:
            message = await asyncio.wait_for(self.receive(), AUTH_TIMEOUT)
        except TimeoutError:
            raise AuthFailed(
                f"no credentials: send {{'type': 'auth', 'token': …}} within {AUTH_TIMEOUT:g} s"
            ) from None
        if message["type"] != "websocket.receive":
            return None
        frame: Any = None
        with contextlib.suppress(ValueError, RecursionError):
            frame = json.loads(message.get("text") or "")
        if not (isinstance(frame, dict) and frame.get("type") == "auth"):
            raise AuthFailed('authenticate first: {"type": "auth", "token": "…"}')
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise AuthFailed("the auth frame's token must be a string")
        return token

    def _overflowed(self) -> None:
        if not self.closed and self.closing is None:
            self.closing = asyncio.create_task(
                self.close(TOO_SLOW, "too far behind; reconnect with since")
            )

    # -- the three loops: requests, events, pings ------------------------------------
    async def _requests(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            wait = self.bucket.take()
            if wait:
                req = cmd.quick_req(text) if text is not None else None
                error = cmd.CommandError(
                    "throttled",
                    f"more than {RATE:g} requests a second on this connection; slow down",
                    retry_after=math.ceil(wait * 1000) / 1000,  # seconds
                )
                reply = cmd.error_reply(req, error.error)
            elif text is None:
                reply = cmd.error_reply(
                    None, {"code": "bad_frame", "message": "frames are JSON text, not binary"}
                )
            else:
                reply = await self._answer(text)
            if not await self.send_text(reply):
                return

    async def _answer(self, text: str) -> str:
        req: Any = None
        try:
            frame = cmd.parse(text)
            kind = frame.get("type")
            if kind == "auth":  # (its req, if any, is echoed)
                with contextlib.suppress(cmd.CommandError):
                    req = cmd.request_id(frame)
                raise cmd.CommandError("already_authenticated", "this connection is authenticated")
            req = cmd.request_id(frame)
            if kind == "subscribe" or kind == "unsubscribe":
                return await self._subscription(kind, frame, req)
            build = cmd.COMMANDS.get(kind) if isinstance(kind, str) else None
            if build is None:
                known = ", ".join(["subscribe", "unsubscribe", *cmd.COMMANDS])
                raise cmd.CommandError("unknown_type", f"unknown request type; use one of {known}")
            call = build(frame)
            return cast(str, await scope_auth.in_db_thread(self._command, call, req))
        except cmd.CommandError as exc:
            if exc.error["code"] == "missing_req" or exc.error["code"] == "bad_req":
                req = None
            return cmd.error_reply(req, exc.error)
        except AuthFailed as exc:
            raise Close(UNAUTHORIZED, exc.message) from None

    def _recheck(self) -> Any:
        """The credential's user now, who must still be allowed what this connection
        follows: one no longer staff loses "all" and other users' tasks and pipelines
        (DB thread)."""
        user = self.credential.user()
        self.checked_at = time.monotonic()
        sub = self.sub
        if sub is not None and not user.is_staff and (sub.everything or sub.tasks or sub.pipelines):
            tasks, pipelines = list(sub.tasks), list(sub.pipelines)
            foreign = (
                sub.everything
                or service.visible_tasks(user).filter(pk__in=tasks).count() < len(tasks)
                or visible_pipelines(user).filter(pk__in=pipelines).count() < len(pipelines)
            )
            if foreign:
                raise AuthFailed(
                    "this user may no longer follow all or other users' tasks; reconnect"
                )
        return user

    def _command(self, call: cmd.RestCall, req: Any) -> str:
        """Check the credential, then run (DB thread)."""
        self.user = self._recheck()
        return cmd.run_command(self.user, self.peer, call, req)

    async def _subscription(self, kind: str, frame: dict[str, Any], req: Any) -> str:
        assert self.hub is not None and self.sub is not None
        chosen = cmd.selection(frame)
        if kind == "unsubscribe":
            self.hub.unsubscribe(
                self.sub,
                tasks=chosen.tasks,
                pipelines=chosen.pipelines,
                mine=chosen.mine,
                everything=chosen.everything,
            )
            return cmd.reply(req, chosen.describe())
        since = cmd.since_of(frame)
        cmd.check_room(self.sub.tasks, self.sub.pipelines, chosen)
        self.user = await scope_auth.in_db_thread(self._visible, chosen)
        if chosen.everything and not self.user.is_staff:
            raise cmd.CommandError("permission_denied", "only staff may follow all tasks")
        try:
            upto = self.hub.subscribe(
                self.sub,
                tasks=chosen.tasks,
                pipelines=chosen.pipelines,
                mine=chosen.mine,
                everything=chosen.everything,
                since=since,
            )
        except SinceAhead as exc:
            raise cmd.CommandError("invalid_params", str(exc), field="since") from None
        return cmd.reply(req, {**chosen.describe(), "upto": upto})

    def _visible(self, chosen: cmd.Selection) -> Any:
        user = self._recheck()
        cmd.check_visible(user, chosen.tasks)
        cmd.check_visible_pipelines(user, chosen.pipelines)
        return user

    async def _events(self) -> None:
        assert self.hub is not None and self.sub is not None
        try:
            while True:
                for frame in await self.sub.frames(self.hub.load_replay):
                    if not await self.send_text(frame):
                        return
        except Overflow:
            self._overflowed()
        except Exception:
            log.exception("WebSocket event stream failed")
            await self.close(SERVER_ERROR, "internal error; see the server log")

    async def _pings(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if not await self.send_text(PING):
                return
            if time.monotonic() - self.checked_at >= RECHECK_INTERVAL:
                try:
                    self.user = await scope_auth.in_db_thread(self._recheck)
                except AuthFailed as exc:
                    await self.close(UNAUTHORIZED, exc.message)
                    return
                self.checked_at = time.monotonic()
