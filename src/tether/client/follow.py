"""``Follower``: some tasks kept up to date from the event stream (or by polling a
server that has none), for ``Client.wait`` and the CLI's ``watch`` and ``wait``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from tether.client.errors import NotFound, StreamUnavailable, Unreachable, WaitTimeout
from tether.client.stream import EventStream, Notice, Notify

if TYPE_CHECKING:
    from tether.client.client import Client

FINAL = frozenset({"succeeded", "failed", "cancelled"})
MAX_IDS = 1000  # task ids a subscribe request may name (the server's limit)
T = TypeVar("T")


class Follower:
    """``latest[id]`` is each task as the REST API shows it (None: not found), kept up
    to date: status events set its status (a final one fetches the whole task, with
    its result or error), progress events its progress. When the server has no event
    stream, every unfinished task is fetched each ``poll_interval`` seconds instead and
    ``notify(Notice.POLLING, why)`` says so, once. A server that cannot be reached is
    waited for (``Notice.LOST``, then ``Notice.BACK``) for up to ``retry_for`` seconds.
    """

    def __init__(
        self,
        client: Client,
        task_ids: Collection[int],
        *,
        poll_interval: float = 0.3,
        notify: Notify | None = None,
        retry_for: float = 120.0,
    ) -> None:
        self.client = client
        self.ids = list(dict.fromkeys(task_ids))
        self.poll_interval = poll_interval
        self.notify = notify
        self.retry_for = retry_for
        self.latest: dict[int, dict[str, Any] | None] = {}
        self.mode: Literal["stream", "poll"] = "stream"
        self.stream: EventStream | None = None

    def start(self) -> None:
        """Fetch every task (an unreachable server raises at once), subscribe to the
        unfinished ones, then fetch those again: a change made before the subscription
        took effect is in that answer, any later one comes as an event."""
        for task_id in self.ids:
            self.latest[task_id] = self._fetch(task_id)
        unfinished = self.unfinished()
        if not unfinished:
            return
        tasks: list[int] | Literal["mine", "all"] = unfinished
        if len(unfinished) > MAX_IDS:  # more than a subscription names: take them all
            tasks = "all" if self.client.me().get("is_staff") else "mine"
        try:
            self.stream = self.client.events(tasks, retry_for=self.retry_for, notify=self.notify)
        except StreamUnavailable as exc:
            self._to_polling(exc)
            return
        for task_id in unfinished:
            self.latest[task_id] = self._patiently(partial(self._fetch, task_id))

    def unfinished(self) -> list[int]:
        return [i for i, t in self.latest.items() if t is not None and t["status"] not in FINAL]

    @property
    def done(self) -> bool:
        """Every task is final (or was not found)."""
        return not self.unfinished()

    def next(self, timeout: float | None = None) -> set[int]:
        """Wait for a change; the ids of the tasks that changed, or an empty set when
        ``timeout`` seconds passed first (at once when every task is final)."""
        if self.done:
            return set()
        if self.mode == "poll" or self.stream is None:
            pause = self.poll_interval if timeout is None else min(timeout, self.poll_interval)
            time.sleep(max(pause, 0))
            return self._poll()
        try:
            event = self.stream.get(timeout)
        except StreamUnavailable as exc:  # came back without a stream (an older server)
            self._to_polling(exc)
            return self._poll()
        return self._apply(event) if event is not None else set()

    def _apply(self, event: dict[str, Any]) -> set[int]:
        task_id = event.get("task")
        task = self.latest.get(task_id) if isinstance(task_id, int) else None
        if task is None or task["status"] in FINAL:
            return set()
        assert isinstance(task_id, int)
        if event.get("kind") == "progress":
            self.latest[task_id] = {**task, "progress": event.get("progress")}
        elif event.get("to") in FINAL:
            self.latest[task_id] = self._patiently(partial(self._fetch, task_id))
        else:
            moved = {**task, "status": event.get("to")}
            if moved["status"] != "running" and isinstance(task.get("progress"), dict):
                # as the API shows it: no time left is counting down unless it runs
                moved["progress"] = {**task["progress"], "eta_seconds": None}
            self.latest[task_id] = moved
        return {task_id}

    def _poll(self) -> set[int]:
        changed = set()
        for task_id in self.unfinished():
            task = self._patiently(partial(self._fetch, task_id))
            if task != self.latest[task_id]:
                self.latest[task_id] = task
                changed.add(task_id)
        return changed

    def _to_polling(self, exc: Exception) -> None:
        self.mode = "poll"
        self.stream = None
        if self.notify is not None:
            self.notify(Notice.POLLING, str(exc))

    def _fetch(self, task_id: int) -> dict[str, Any] | None:
        try:
            return self.client.task(task_id)
        except NotFound:
            return None

    def _patiently(self, call: Callable[[], T]) -> T:
        """``call()``, retried each second while the server cannot be reached (a
        restart), for up to ``retry_for`` seconds."""
        lost: float | None = None
        while True:
            try:
                result = call()
            except Unreachable:
                now = time.monotonic()
                if lost is None:
                    lost = now
                    if self.notify is not None:
                        self.notify(Notice.LOST, "")
                elif now - lost > self.retry_for:
                    raise
                time.sleep(1.0)
                continue
            if lost is not None and self.notify is not None:
                self.notify(Notice.BACK, "")
            return result

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(
    follower: Follower, task_id: int, until: Collection[str], timeout: float | None
) -> dict[str, Any]:
    """The task once its status is in ``until`` or final (see ``Client.wait``)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        task = follower.latest.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", code="not_found")
        if task["status"] in until or task["status"] in FINAL:
            return task
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise WaitTimeout(timeout or 0.0, task)
        follower.next(left)
