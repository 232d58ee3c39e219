"""Helpers for tests of the WebSocket API ``/ws/v1`` of a real ``tether serve``.

``Socket`` wraps a websockets (sync) client connection: ``request()`` sends a request
and returns its reply, keeping the events that arrive meanwhile; ``events_until()``
reads events until a condition holds, with a deadline. ``closed()`` waits for the
server to close and returns its close code. Nothing here sleeps.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.acceptance.conftest import Server

Frame = dict[str, Any]
TIMEOUT = 30.0


def ws_url(srv: Server) -> str:
    return f"ws://127.0.0.1:{srv.port}/ws/v1"


def token_of(client: httpx.Client) -> str:
    return str(client.headers["Authorization"]).split()[1]


def raw_connect(srv: Server, headers: dict[str, str] | None = None, **kw: Any) -> ClientConnection:
    return connect(
        kw.pop("url", ws_url(srv)),
        additional_headers=headers or {},
        open_timeout=10,
        compression=None,
        legacy=True,
        **kw,
    )


def closed(conn: ClientConnection, timeout: float = TIMEOUT) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            conn.recv(timeout=max(deadline - time.monotonic(), 0.001))
    except ConnectionClosed as exc:
        if exc.rcvd is None:
            return None, ""
        return exc.rcvd.code, exc.rcvd.reason
    except TimeoutError:
        pytest.fail(f"the server did not close the connection within {timeout:g}s")


class Socket:
    """An authenticated connection (``hello`` read)."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.events: list[Frame] = []
        self.replies: dict[Any, Frame] = {}
        self._ids = itertools.count(1)
        self.hello = self.next_frame()
        assert self.hello["type"] == "hello", self.hello

    @classmethod
    def open(cls, srv: Server, token: str, **headers: str) -> Socket:
        return cls(raw_connect(srv, {"Authorization": f"Token {token}", **headers}))

    @classmethod
    def try_open(cls, srv: Server, token: str) -> Socket | None:
        """A connection, or None when the server closes it at once with 4429."""
        conn = raw_connect(srv, {"Authorization": f"Token {token}"})
        try:
            return cls(conn)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4429:
                return None
            raise

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_frame(self, timeout: float = TIMEOUT) -> Frame:
        frame = json.loads(self.conn.recv(timeout=timeout))
        assert isinstance(frame, dict), frame
        return frame

    def _read(self, deadline: float, what: str) -> None:
        """One frame into ``events`` or ``replies`` (pings are dropped)."""
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out waiting for {what}")
        try:
            frame = self.next_frame(timeout=left)
        except TimeoutError:
            pytest.fail(f"timed out waiting for {what}")
        if frame["type"] == "event":
            self.events.append(frame)
        elif frame["type"] == "reply":
            self.replies[frame["req"]] = frame
        else:
            assert frame == {"type": "ping"}, frame

    def send(self, frame: Frame | str) -> None:
        self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    def reply_to(self, req: Any, timeout: float = TIMEOUT) -> Frame:
        deadline = time.monotonic() + timeout
        while req not in self.replies:
            self._read(deadline, f"the reply to req {req!r}")
        return self.replies.pop(req)

    def request(self, kind: str, timeout: float = TIMEOUT, **fields: Any) -> Frame:
        req = next(self._ids)
        self.send({"type": kind, "req": req, **fields})
        return self.reply_to(req, timeout)

    def ok(self, kind: str, **fields: Any) -> Any:
        """The data of a request that must succeed."""
        reply = self.request(kind, **fields)
        assert reply["ok"] is True, reply
        return reply["data"]

    def error(self, kind: str, code: str, **fields: Any) -> dict[str, Any]:
        """The error of a request that must fail with ``code``."""
        reply = self.request(kind, **fields)
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
        return dict(reply["error"])

    def events_until(
        self, done: Callable[[list[Frame]], bool], what: str, timeout: float = TIMEOUT
    ) -> list[Frame]:
        """Read until ``done(self.events)``; return the events."""
        deadline = time.monotonic() + timeout
        while not done(self.events):
            self._read(deadline, what)
        return self.events

    def statuses(self, task: int | None = None) -> list[Frame]:
        return [
            e for e in self.events if e["kind"] == "status" and (task is None or e["task"] == task)
        ]


def reached(task: int, status: str) -> Callable[[list[Frame]], bool]:
    return lambda events: any(
        e["kind"] == "status" and e["task"] == task and e["to"] == status for e in events
    )


def all_reached(tasks: list[int], status: str) -> Callable[[list[Frame]], bool]:
    wanted = set(tasks)
    return lambda events: (
        wanted <= {e["task"] for e in events if e["kind"] == "status" and e["to"] == status}
    )
