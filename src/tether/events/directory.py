"""What the hub knows of tasks and users: the owner, type and pipeline of recent tasks
(progress updates arrive without them), used by the hub's thread, and owners' names,
also asked for by replays in other threads (a dict's update is atomic)."""

from __future__ import annotations

from collections import OrderedDict

from tether.events import stored
from tether.events.bus import ProgressUpdate
from tether.transitions import Change

MAX_TASKS_REMEMBERED = 100_000


class Directory:
    def __init__(self, limit: int = MAX_TASKS_REMEMBERED) -> None:
        self.limit = limit
        self._tasks: OrderedDict[int, tuple[int, str, int | None]] = OrderedDict()
        self._names: dict[int, str] = {}

    def remember(self, changes: list[Change]) -> None:
        for c in changes:
            if c.owner_id is not None:
                self._add(c.task_id, (c.owner_id, c.task_type, c.pipeline_id))

    def _add(self, task_id: int, meta: tuple[int, str, int | None]) -> None:
        tasks = self._tasks
        if task_id not in tasks:
            tasks[task_id] = meta
            if len(tasks) > self.limit:
                tasks.popitem(last=False)

    def pipeline_of(self, task_id: int) -> int | None:
        meta = self._tasks.get(task_id)
        return None if meta is None else meta[2]

    def complete(self, progress: list[ProgressUpdate], pipelines: bool) -> list[ProgressUpdate]:
        """The newest figures of each task, with its owner and type (a task that is
        gone is left out). With ``pipelines`` (someone follows one), a task not seen
        before is looked up even when its owner came with it, to learn its pipeline."""
        latest: dict[int, ProgressUpdate] = {}
        for p in progress:
            latest[p.task_id] = p
        missing = [
            t
            for t, p in latest.items()
            if t not in self._tasks and (p.owner_id is None or pipelines)
        ]
        if missing:
            for task_id, meta in stored.task_meta(missing).items():
                self._add(task_id, meta)
        out = []
        for task_id, p in latest.items():
            if p.owner_id is None:
                known = self._tasks.get(task_id)
                if known is None:
                    continue  # the task is gone
                p = ProgressUpdate(task_id, p.progress, known[0], known[1], p.at)
            out.append(p)
        return out

    def names(self, owner_ids: set[int]) -> dict[int, str]:
        missing = [i for i in owner_ids if i not in self._names]
        if missing:
            self._names.update(stored.usernames(missing))
        return self._names
