"""The fan-out in the serving process: committed changes in, frames out to every
subscriber that may see them.

Changes arrive from the bus (this process) and, with Celery workers, from the
cross-process transport. One thread orders status events (see ``sequencer``),
resolves owner names, encodes each frame once and queues it for the subscribers of
its task, of its pipeline, of its owner ("mine") and of everything (staff) (see
``routes``). Subscribers are woken in their event loop; nothing here waits on a client.

A pipeline's changes are not task events: they have no place in the id order and are
not replayed, but one waits until the status events heard before it are released, so
that a step's change goes out before the pipeline's change it caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections, connection
from django.db.models import Q

from tether.events import bus, stored
from tether.events.directory import Directory
from tether.events.records import (
    PipelineUpdate,
    ProgressUpdate,
    pipeline_event,
    progress_event,
    status_event,
)
from tether.events.routes import Routes
from tether.events.sequencer import Sequencer
from tether.events.subscriber import REPLAY_PAGE, Replay, Subscriber
from tether.transitions import Change, wake_waiters

log = logging.getLogger(__name__)
QUIET_CHECK_SECONDS = 1.0  # with nothing heard this long, read the history's tail
PROGRESS_EVERY = 0.05
"""Progress is fanned out at most this often, the latest figures of each task at a
time: with many subscribers, one pass for many updates costs far less than one each."""


class SinceAhead(ValueError):
    """A ``since`` past every event there is (another installation's, or from before
    the database was reset): following it would hide every status event."""

    def __init__(self, since: int, newest: int) -> None:
        super().__init__(
            f"since {since} is past the newest event ({newest}); resume from an event id "
            "this server sent, or leave since out"
        )


def encode(event: dict[str, Any]) -> str:
    return json.dumps({"type": "event", **event}, separators=(",", ":"))


class Hub:
    def __init__(self) -> None:
        self._inbox: deque[Sequence[Any]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the routes, and the watermark seen by subscribe
        self._routes = Routes()
        self._directory = Directory()
        self._db = ThreadPoolExecutor(4, thread_name_prefix="tether-events-db")
        self.seq = Sequencer(0)
        self._delivered = 0  # the last in-order status event handed to subscribers
        self._newest = 0  # the highest event id heard (read by subscribe, any thread)
        self._staged: dict[int, ProgressUpdate] = {}  # progress waiting for its pass
        self._held: list[tuple[int, PipelineUpdate]] = []  # (newest event heard before it, it)
        self._progress_due = 0.0
        self.listeners: list[Callable[[list[dict[str, Any]]], None]] = []
        """Called in the hub's thread with each batch of released events (as dicts)."""

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self.seq = Sequencer(stored.latest_id())
        self._delivered = self._newest = self.seq.watermark
        close_old_connections()
        self._stopping.clear()
        bus.add_sink(self.ingest)
        self._thread = threading.Thread(target=self._loop, name="tether-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        bus.remove_sink(self.ingest)
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self._db.shutdown(wait=True)  # their connections close with the threads
        self._db = ThreadPoolExecutor(4, thread_name_prefix="tether-events-db")

    def ingest(self, items: Sequence[Any]) -> None:
        """A bus sink: queue and return (runs in the thread that committed)."""
        self._inbox.append(items)
        self._wake.set()

    @property
    def delivered(self) -> int:
        """The last status event (in id order) handed to subscribers."""
        return self._delivered

    # -- subscriptions (any thread) -----------------------------------------------------
    def detach(self, sub: Subscriber) -> None:
        with self._lock:
            self._routes.detach(sub)

    def subscribe(
        self,
        sub: Subscriber,
        *,
        tasks: Iterable[int] = (),
        pipelines: Iterable[int] = (),
        mine: bool = False,
        everything: bool = False,
        since: int | None = None,
    ) -> int:
        """Add to what ``sub`` hears. The caller has checked that it may see these tasks
        and pipelines (and that ``everything`` is for staff). With ``since``, stored
        status events after that id are queued first, then live ones: none missed,
        none twice (a pipeline's own events are not replayed, its tasks' are).
        Returns the id up to which history is replayed (the live stream's start).
        Raises SinceAhead for a ``since`` past every event."""
        tasks = [t for t in tasks if t not in sub.tasks]
        pipelines = [p for p in pipelines if p not in sub.pipelines]
        with self._lock:
            upto = self._delivered
            newest = max(upto, self._newest)
            if since is not None and since > newest:
                raise SinceAhead(since, newest)
            if since is not None and since > upto:
                sub.floor = max(sub.floor, since)  # what arrives up to there, it has seen
            if since is not None and since < upto:
                where = Q()
                if not everything:
                    where = Q(task_id__in=tasks) if tasks else Q(pk__in=[])
                    if mine:
                        where |= Q(task__owner_id=sub.user_id)
                    if pipelines:
                        where |= Q(task__pipeline_id__in=pipelines)
                wanted = everything or mine or tasks or pipelines
                if wanted and sub.push_replay(Replay(since, upto, where)):
                    sub.loop.call_soon_threadsafe(sub.wake)
            self._routes.add(
                sub, tasks=tasks, pipelines=pipelines, mine=mine, everything=everything
            )
        return upto

    def unsubscribe(
        self,
        sub: Subscriber,
        *,
        tasks: Iterable[int] = (),
        pipelines: Iterable[int] = (),
        mine: bool = False,
        everything: bool = False,
    ) -> None:
        with self._lock:
            self._routes.remove(
                sub, tasks=tasks, pipelines=pipelines, mine=mine, everything=everything
            )

    def subscriber_count(self) -> int:
        """Subscribers following something (reported by /api/v1/health)."""
        with self._lock:
            return self._routes.count()

    async def load_replay(self, replay: Replay) -> tuple[list[str], Replay | None]:
        """One page of a replay, as frames (runs the query in a database thread)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, self._replay_page, replay)

    def _replay_page(self, replay: Replay) -> tuple[list[str], Replay | None]:
        try:
            changes = stored.between(
                replay.after, replay.upto + 1, where=replay.where, limit=REPLAY_PAGE
            )
            names = self._directory.names({c.owner_id for c in changes if c.owner_id is not None})
        finally:
            close_old_connections()
        frames = [encode(status_event(c, names.get(c.owner_id or 0, ""))) for c in changes]
        rest = None
        if len(changes) == REPLAY_PAGE:
            rest = Replay(changes[-1].event_id or replay.upto, replay.upto, replay.where)
        return frames, rest

    # -- the hub's thread ----------------------------------------------------------------
    def _loop(self) -> None:
        last_heard = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            waits = [QUIET_CHECK_SECONDS - (now - last_heard), self.seq.deadline(now)]
            if self._staged:
                waits.append(self._progress_due - now)
            self._wake.wait(max(0.0, min(w for w in waits if w is not None)))
            self._wake.clear()
            try:
                items = self._take_inbox()
                now = time.monotonic()
                if items:
                    last_heard = now
                elif now - last_heard >= QUIET_CHECK_SECONDS:
                    items = list(stored.between(self.seq.watermark, limit=REPLAY_PAGE))
                    last_heard = now
                self._process(items, now)
            except Exception:
                log.exception("event hub round failed; continuing")
                time.sleep(0.1)  # e.g. the database is down: do not spin
            finally:
                close_old_connections()
        connection.close()

    def _take_inbox(self) -> list[Any]:
        items: list[Any] = []
        inbox = self._inbox
        while inbox:
            items.extend(inbox.popleft())
        return items

    def _process(self, items: list[Any], now: float) -> None:
        changes = [i for i in items if isinstance(i, Change) and i.event_id is not None]
        for item in items:
            if isinstance(item, ProgressUpdate):
                self._staged[item.task_id] = item
        if changes:
            wake_waiters(changes)  # requests waiting on a change (changes of other processes too)
        released = self.seq.add(changes, now)
        self._newest = max(self._newest, self.seq.newest)
        gap = self.seq.gap(now)
        if gap is not None:
            released += self.seq.fill(stored.between(gap[0], gap[1]), now)
        self._held += [(self.seq.newest, i) for i in items if isinstance(i, PipelineUpdate)]
        pipelines = self._pipelines_to_send()
        progress = self._progress_to_send(released, now)
        if not released and not progress and not pipelines:
            return
        directory = self._directory
        directory.remember(released)
        progress = directory.complete(progress, bool(self._routes.by_pipeline))
        names = directory.names(
            {c.owner_id for c in released if c.owner_id is not None}
            | {p.owner_id for p in progress if p.owner_id is not None}
            | {u.owner_id for u in pipelines}
        )
        statuses = [status_event(c, names.get(c.owner_id or 0, "")) for c in released]
        figures = [progress_event(p, names.get(p.owner_id or 0, "")) for p in progress]
        moves = [pipeline_event(u, names.get(u.owner_id, "")) for u in pipelines]
        self._fan_out(
            released, statuses, progress, figures, list(zip(pipelines, moves, strict=True))
        )
        for listener in list(self.listeners):
            try:
                listener(figures + statuses + moves)
            except Exception:
                log.exception("event listener failed")

    def _pipelines_to_send(self) -> list[PipelineUpdate]:
        """The pipeline changes whose earlier status events have all been released."""
        if not self._held:
            return []
        mark = self.seq.watermark
        ready = [u for newest, u in self._held if newest <= mark]
        if ready:
            self._held = [(newest, u) for newest, u in self._held if newest > mark]
        return ready

    def _progress_to_send(self, released: list[Change], now: float) -> list[ProgressUpdate]:
        """The staged progress to send now: all of it once a pass is due, else that of
        tasks whose status changed (their last figures go with the change). Never that
        of a task whose status event waits in the sequencer: it must not overtake it."""
        held = self.seq.waiting_tasks()
        if now >= self._progress_due:
            chosen = [t for t in self._staged if t not in held]
            self._progress_due = now + PROGRESS_EVERY
        else:
            chosen = [c.task_id for c in released if c.task_id in self._staged]
            chosen = [t for t in dict.fromkeys(chosen) if t not in held]
        return [self._staged.pop(t) for t in chosen]

    def _fan_out(
        self,
        released: list[Change],
        statuses: list[dict[str, Any]],
        progress: list[ProgressUpdate],
        figures: list[dict[str, Any]],
        pipelines: list[tuple[PipelineUpdate, dict[str, Any]]],
    ) -> None:
        """Queue the frames: status events in id order; a task's figures taken before
        one of its status changes (its last figures) just before that change, the rest
        after all of them, in one pass per subscriber; then pipelines' changes."""
        at_change: dict[int, list[int]] = defaultdict(list)  # task -> indexes in released
        for i, c in enumerate(released):
            at_change[c.task_id].append(i)
        before: dict[int, list[int]] = defaultdict(list)  # released index -> progress indexes
        after: list[int] = []
        for j, p in enumerate(progress):
            change = next(
                (i for i in at_change.get(p.task_id, ()) if _not_later(p.at, released[i].at)),
                None,
            )
            (before[change] if change is not None else after).append(j)
        woken: set[Subscriber] = set()
        routes, pipeline_of = self._routes, self._directory.pipeline_of
        with self._lock:
            if not routes:
                if released:
                    self._delivered = max(self._delivered, *(c.event_id or 0 for c in released))
                return
            by_pipeline = bool(routes.by_pipeline)  # else no need to know a task's pipeline
            for i, (c, event) in enumerate(zip(released, statuses, strict=True)):
                for j in before.get(i, ()):
                    p = progress[j]
                    frame = encode(figures[j])
                    woken.update(
                        s
                        for s in routes.targets(p.task_id, p.owner_id, c.pipeline_id)
                        if s.push_progress(p.task_id, frame)
                    )
                eid = c.event_id or 0
                self._delivered = max(self._delivered, eid)
                targets = routes.targets(c.task_id, c.owner_id, c.pipeline_id)
                if targets:
                    frame = encode(event)
                    woken.update(s for s in targets if s.push_status(frame, eid))
            batches: dict[Subscriber, list[tuple[int, str]]] = defaultdict(list)
            for j in after:
                p = progress[j]
                pipeline_id = pipeline_of(p.task_id) if by_pipeline else None
                encoded: str | None = None
                # a repeat is harmless: the newer figures replace the older
                for sub in routes.each_target(p.task_id, p.owner_id, pipeline_id):
                    encoded = encoded or encode(figures[j])
                    batches[sub].append((p.task_id, encoded))
            woken.update(sub for sub, batch in batches.items() if sub.push_progress_many(batch))
            for u, move in pipelines:
                targets = routes.of_pipeline(u.pipeline_id, u.owner_id)
                if targets:
                    frame = encode(move)
                    woken.update(s for s in targets if s.push_status(frame))
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = defaultdict(list)
        for sub in woken:
            by_loop[sub.loop].append(sub)
        for loop, subs in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its clients are gone
                loop.call_soon_threadsafe(_wake_all, subs)


def _not_later(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a <= b


def _wake_all(subs: list[Subscriber]) -> None:
    for sub in subs:
        sub.wake()


_hub: Hub | None = None
_hub_lock = threading.Lock()


def current_hub() -> Hub | None:
    """The process's hub if something has started it (without starting it)."""
    return _hub


def get_hub() -> Hub:
    """The process's hub, started on first use."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = Hub()
        if not _hub.running:
            _hub.start()
        return _hub
