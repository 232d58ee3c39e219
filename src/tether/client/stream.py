"""``EventStream``: the server's live events over the WebSocket ``/ws/v1``, as an
iterator of event dicts that outlives lost connections.

A lost connection (a restart, a network cut, or the server's close 4008 when this
client read too slowly) is reconnected with backoff and re-subscribed with ``since`` =
the last status event delivered, so the server replays what was missed: no status
event is lost or delivered twice. Progress events are not replayed (the next one
carries the latest figures), nor are pipelines' own events (re-read a followed
pipeline after a reconnection: ``hello`` is then a new dict).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

from tether.client.errors import (
    Forbidden,
    NotTetherServer,
    StreamUnavailable,
    TetherError,
    TooManyRequests,
    Unauthorized,
    Unreachable,
    reply_error,
)

BACKOFF = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # seconds between attempts to reconnect, then 5
BACKOFF_MAX = 5.0
# Close codes of a server going away or overloaded for a moment: connect again.
GOING_AWAY = frozenset({1001, 1006, 1011, 1012, 1013, 4008})


class Notice(StrEnum):
    """What a client tells its user about the connection (``notify(notice, detail)``)."""

    LOST = "lost"  # the server cannot be reached: retrying
    BACK = "back"  # reached again after LOST
    POLLING = "polling"  # the server has no event stream: polling instead (detail: why)


Notify = Callable[[Notice, str], None]


def ws_url(server: str) -> str:
    """``http://host:8000/prefix`` → ``ws://host:8000/prefix/ws/v1`` (https → wss)."""
    parts = urlsplit(server)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws/v1", "", ""))


def close_error(code: int | None, reason: str) -> TetherError | None:
    """The error a close code means, or None when reconnecting may help."""
    if code == 4401:
        return Unauthorized(reason or "the server refused the token", code="unauthorized")
    if code == 4403:
        return Forbidden(reason or "the server refused this origin", code="origin_not_allowed")
    if code == 4429:
        return TooManyRequests(
            reason or "too many event stream connections for this user",
            code="too_many_connections",
        )
    if code in (4400, 1009):
        return NotTetherServer(f"the server closed the event stream ({code}): {reason}")
    return None


class EventStream:
    """Events of ``tasks`` (ids, ``"mine"`` or ``"all"``) and of ``pipelines`` (ids:
    their own events and every event of their tasks) after ``since``. Iterate it, or
    call ``get(timeout)``; ``close()`` (any thread) ends it. ``last_id`` is the last
    status event id delivered: pass it as ``since`` to a later stream to resume."""

    def __init__(
        self,
        server: str,
        token: str | None,
        tasks: list[int] | str,
        since: int | None = None,
        *,
        user_agent: str = "tether-client",
        retry_for: float | None = 120.0,
        notify: Notify | None = None,
        open_timeout: float = 10.0,
        pipelines: Collection[int] = (),
    ) -> None:
        self.server = server
        self.url = ws_url(server)
        self.token = token
        self.tasks = tasks
        self.pipelines = list(pipelines)
        self.last_id = since
        self.user_agent = user_agent
        self.retry_for = retry_for
        self.notify = notify
        self.open_timeout = open_timeout
        self.hello: dict[str, Any] = {}
        self._ws: ClientConnection | None = None
        self._pending: deque[dict[str, Any]] = deque()
        self._req = 0
        self._closed = False
        self._lost_at: float | None = None  # when reconnecting started failing
        self._attempt = 0  # failed attempts since the connection was lost
        self._retry_at: float | None = None  # when to try connecting again

    # -- connecting ----------------------------------------------------------------

    def open(self) -> EventStream:
        """Connect, authenticate and subscribe; errors are raised as they are."""
        self._ws = self._connect(first=True)
        return self

    def _connect(self, first: bool) -> ClientConnection:
        headers = {"Authorization": f"Token {self.token}"} if self.token else {}
        try:
            ws = connect(
                self.url,
                additional_headers=headers,
                user_agent_header=self.user_agent,
                open_timeout=self.open_timeout,
                compression=None,  # small frames: deflate would cost more than it saves
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise Unauthorized("the server refused the token", code="unauthorized") from None
            if status >= 500 and not first:  # a proxy whose backend is restarting
                raise Unreachable(self.server, f"HTTP {status}") from None
            raise StreamUnavailable(
                f"{self.server} has no event stream at /ws/v1 (HTTP {status})"
            ) from None
        except InvalidURI as exc:
            raise TetherError(f"bad server URL {self.server!r}: {exc}") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise Unreachable(self.server, str(exc) or type(exc).__name__) from None
        # entered as its context manager says it is kept (websockets >= 17.1 warns about a
        # connection that is not); close() ends it
        ws.__enter__()
        try:
            self._handshake(ws)
        except BaseException:
            ws.close()
            raise
        return ws

    def _handshake(self, ws: ClientConnection) -> None:
        """Read the hello, subscribe, and keep events that come before the reply."""
        deadline = time.monotonic() + self.open_timeout
        self.hello = self._expect(ws, deadline, lambda f: f.get("type") == "hello")
        self._req += 1
        request: dict[str, Any] = {"type": "subscribe", "req": self._req, "tasks": self.tasks}
        if self.pipelines:
            request["pipelines"] = self.pipelines
        if self.last_id is not None:
            request["since"] = self.last_id
        try:
            ws.send(json.dumps(request))
        except ConnectionClosed as exc:
            raise self._closed_while_opening(exc) from None
        req = self._req
        reply = self._expect(
            ws, deadline, lambda f: f.get("type") == "reply" and f.get("req") == req
        )
        if not reply.get("ok"):
            raise reply_error(reply.get("error"))
        upto = (reply.get("data") or {}).get("upto")
        if self.last_id is None and isinstance(upto, int):
            self.last_id = upto  # nothing before it was asked for: a reconnection resumes here

    def _expect(
        self, ws: ClientConnection, deadline: float, wanted: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The first frame ``wanted``; events met on the way are kept for ``get``."""
        while True:
            try:
                raw = ws.recv(timeout=max(deadline - time.monotonic(), 0.001))
            except TimeoutError:
                raise Unreachable(self.server, "the event stream did not answer") from None
            except ConnectionClosed as exc:
                raise self._closed_while_opening(exc) from None
            frame = self._parse(raw)
            if wanted(frame):
                return frame
            if frame.get("type") == "event":
                self._pending.append(frame)

    def _closed_while_opening(self, exc: ConnectionClosed) -> TetherError:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        found = close_error(code, reason)
        if found is not None:
            return found
        if code is None or code in GOING_AWAY:  # a restart, a shutdown, a cut
            return Unreachable(self.server, f"the event stream was closed ({code or 'no code'})")
        return StreamUnavailable(f"the server closed the event stream ({code}) {reason}".strip())

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        try:
            frame = json.loads(raw)
        except ValueError:
            raise NotTetherServer(f"{self.url} sent a frame that is not JSON") from None
        if not isinstance(frame, dict):
            raise NotTetherServer(f"{self.url} sent a frame that is not a JSON object")
        return frame

    def _reconnect(self, deadline: float | None) -> ClientConnection | None:
        """Connect again, attempts spaced by BACKOFF; None when ``deadline`` passes
        first (the next call goes on where this one stopped). Raises the last failure
        once reconnecting has failed for ``retry_for`` seconds."""
        while not self._closed:
            now = time.monotonic()
            if self._retry_at is None:
                self._retry_at = now  # the first attempt is at once (a 4008, a cut)
            if deadline is not None and self._retry_at > deadline:
                time.sleep(max(deadline - now, 0))
                return None
            time.sleep(max(self._retry_at - now, 0))
            try:
                ws = self._connect(first=False)
            except Unreachable:
                now = time.monotonic()
                if self._lost_at is None:
                    self._lost_at = now
                    self._say(Notice.LOST, "the server cannot be reached")
                elif self.retry_for is not None and now - self._lost_at > self.retry_for:
                    raise
                self._attempt += 1
                delay = BACKOFF[self._attempt] if self._attempt < len(BACKOFF) else BACKOFF_MAX
                self._retry_at = now + delay
                continue
            if self._lost_at is not None:
                self._say(Notice.BACK, "")
            self._lost_at = self._retry_at = None
            self._attempt = 0
            return ws
        return None

    def _say(self, notice: Notice, detail: str) -> None:
        if self.notify is not None:
            self.notify(notice, detail)

    # -- reading -------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event, or None when ``timeout`` seconds pass first (or the stream
        was closed). Reconnects as needed; raises what cannot be retried."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            if self._pending:
                event = self._accept(self._pending.popleft())
                if event is not None:
                    return event
                continue
            ws = self._ws
            if ws is None:
                ws = self._ws = self._reconnect(deadline)
                if ws is None:
                    return None
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            try:
                raw = ws.recv(timeout=left)
            except TimeoutError:
                return None
            except ConnectionClosed as exc:
                self._ws = None
                if self._closed:
                    return None
                code = exc.rcvd.code if exc.rcvd is not None else None
                fatal = close_error(code, exc.rcvd.reason if exc.rcvd is not None else "")
                if fatal is not None:
                    raise fatal from None
                continue  # 4008 (read too slowly), a restart, a cut: resume with since
            event = self._accept(self._parse(raw))
            if event is not None:
                return event
        return None

    def _accept(self, frame: dict[str, Any]) -> dict[str, Any] | None:
        """The event of ``frame`` without its ``type``; None for pings, other frames,
        and status events at or before ``last_id`` (already delivered)."""
        if frame.get("type") != "event":
            return None
        event = {k: v for k, v in frame.items() if k != "type"}
        event_id = event.get("id")
        if event.get("kind") == "status" and isinstance(event_id, int):
            if self.last_id is not None and event_id <= self.last_id:
                return None
            self.last_id = event_id
        return event

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while not self._closed:
                event = self.get()
                if event is not None:
                    yield event
        finally:
            self.close()

    def close(self) -> None:
        self._closed = True
        ws = self._ws
        if ws is not None:
            ws.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
