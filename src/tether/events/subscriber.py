"""One client's subscription: what it wants to hear and a bounded queue of frames.

The hub's thread pushes; the client's coroutine takes. Status frames are never
dropped: past ``limit`` waiting ones the subscriber is marked overflowed and its
connection closed (the client resumes with ``since``). A task's progress frame still
waiting is replaced by the newer one, so a slow reader gets the latest figures, not
a backlog, and never slows the hub or other clients.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Q

STATUS_LIMIT = 10_000
REPLAY_PAGE = 1_000


def event_queue_limit() -> int:
    """Status events a subscriber may have waiting (TETHER_EVENT_QUEUE_LIMIT)."""
    from django.conf import settings

    conf: dict[str, Any] = settings.TETHER
    return int(conf.get("EVENT_QUEUE_LIMIT", STATUS_LIMIT))


def streams_per_user() -> int:
    """WebSocket connections (and, counted apart, SSE streams) a user may hold open
    at once (TETHER_STREAMS_PER_USER)."""
    from django.conf import settings

    conf: dict[str, Any] = settings.TETHER
    return int(conf.get("STREAMS_PER_USER", 64))


class Overflow(Exception):
    """The client fell too far behind: close it (4008) and let it resume with since."""


@dataclass
class Replay:
    """Stored status events still to send: ids in (after, upto] matching ``where``."""

    after: int
    upto: int
    where: Q


# a queue entry: [kind, payload, task] with kind "s" (status frame), "p" (progress
# frame, replaced in place while it waits) or "r" (a Replay still to be read)
Entry = list[Any]
LoadReplay = Callable[[Replay], Awaitable[tuple[list[str], Replay | None]]]


class Subscriber:
    def __init__(
        self,
        user_id: int,
        is_staff: bool,
        loop: asyncio.AbstractEventLoop,
        *,
        limit: int = STATUS_LIMIT,
    ) -> None:
        self.user_id = user_id
        self.is_staff = is_staff
        self.loop = loop
        self.limit = limit
        self.tasks: set[int] = set()
        self.pipelines: set[int] = set()
        self.mine = False
        self.everything = False
        self.overflowed = False
        self.floor = 0
        """Status events up to this id are not sent (the client resumed after them)."""
        self._queue: deque[Entry] = deque()
        self._progress: dict[int, Entry] = {}
        self._statuses = 0
        self._lock = threading.Lock()
        self._ready = asyncio.Event()
        self._signalled = False

    # -- the hub's side (any thread) -------------------------------------------------
    def push_status(self, frame: str, event_id: int = 0) -> bool:
        """Queue a status frame; True when the client must be woken."""
        with self._lock:
            if self.overflowed or 0 < event_id <= self.floor:
                return False
            if self._statuses >= self.limit:
                self.overflowed = True
                self._queue.clear()
                self._progress.clear()
            else:
                self._queue.append(["s", frame, None])
                self._statuses += 1
            return self._signal()

    def push_progress(self, task_id: int, frame: str) -> bool:
        return self.push_progress_many([(task_id, frame)])

    def push_progress_many(self, frames: list[tuple[int, str]]) -> bool:
        """Queue progress frames (task id, frame), each replacing the task's frame
        still waiting; True when the client must be woken."""
        with self._lock:
            if self.overflowed:
                return False
            added = False
            waiting = self._progress
            for task_id, frame in frames:
                entry = waiting.get(task_id)
                if entry is not None:
                    entry[1] = frame
                else:
                    entry = ["p", frame, task_id]
                    waiting[task_id] = entry
                    self._queue.append(entry)
                    added = True
            return added and self._signal()

    def push_replay(self, replay: Replay) -> bool:
        with self._lock:
            self._queue.append(["r", replay, None])
            return self._signal()

    def _signal(self) -> bool:
        if self._signalled:
            return False
        self._signalled = True
        return True

    def wake(self) -> None:
        """Run in the subscriber's event loop."""
        self._ready.set()

    # -- the client's side (its event loop) ----------------------------------------------
    async def frames(self, load: LoadReplay, batch: int = 500) -> list[str]:
        """Wait for and take the next frames, oldest first. Raises Overflow."""
        while True:
            with self._lock:
                if self.overflowed:
                    raise Overflow()
                head = self._queue[0] if self._queue else None
                if head is not None and head[0] == "r":
                    self._queue.popleft()
                else:
                    out = self._take(batch)
                    if out:
                        return out
                    self._signalled = False
                    self._ready.clear()
            if head is not None and head[0] == "r":
                frames, rest = await load(head[1])
                with self._lock:
                    if rest is not None:
                        self._queue.appendleft(["r", rest, None])
                    self._queue.extendleft(["s", f, None] for f in reversed(frames))
                    self._statuses += len(frames)
                continue
            await self._ready.wait()

    def _take(self, batch: int) -> list[str]:
        out: list[str] = []
        queue = self._queue
        while queue and len(out) < batch and queue[0][0] != "r":
            kind, frame, task_id = queue.popleft()
            if kind == "s":
                self._statuses -= 1
            else:
                del self._progress[task_id]
            out.append(frame)
        return out
