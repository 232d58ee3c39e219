"""Who hears what: the hub's index of subscribers by task, owner ("mine"), pipeline
and everything (staff), kept in step with each subscriber's own record of what it
follows. Not thread-safe: the hub holds its lock around every call."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from tether.events.subscriber import Subscriber


class Routes:
    def __init__(self) -> None:
        self.by_task: dict[int, set[Subscriber]] = defaultdict(set)
        self.by_owner: dict[int, set[Subscriber]] = defaultdict(set)
        self.by_pipeline: dict[int, set[Subscriber]] = defaultdict(set)
        self.everything: set[Subscriber] = set()

    def __bool__(self) -> bool:
        """Anyone follows anything."""
        return bool(self.everything or self.by_task or self.by_owner or self.by_pipeline)

    def add(
        self,
        sub: Subscriber,
        *,
        tasks: Iterable[int] = (),
        pipelines: Iterable[int] = (),
        mine: bool = False,
        everything: bool = False,
    ) -> None:
        for task_id in tasks:
            self.by_task[task_id].add(sub)
            sub.tasks.add(task_id)
        for pipeline_id in pipelines:
            self.by_pipeline[pipeline_id].add(sub)
            sub.pipelines.add(pipeline_id)
        if mine and not sub.mine:
            self.by_owner[sub.user_id].add(sub)
            sub.mine = True
        if everything and not sub.everything:
            self.everything.add(sub)
            sub.everything = True

    def remove(
        self,
        sub: Subscriber,
        *,
        tasks: Iterable[int] = (),
        pipelines: Iterable[int] = (),
        mine: bool = False,
        everything: bool = False,
    ) -> None:
        for task_id in tasks:
            if task_id in sub.tasks:
                sub.tasks.discard(task_id)
                _drop(self.by_task, task_id, sub)
        for pipeline_id in pipelines:
            if pipeline_id in sub.pipelines:
                sub.pipelines.discard(pipeline_id)
                _drop(self.by_pipeline, pipeline_id, sub)
        if mine and sub.mine:
            _drop(self.by_owner, sub.user_id, sub)
            sub.mine = False
        if everything:
            self.everything.discard(sub)
            sub.everything = False

    def detach(self, sub: Subscriber) -> None:
        self.remove(
            sub, tasks=list(sub.tasks), pipelines=list(sub.pipelines), mine=True, everything=True
        )

    def count(self) -> int:
        subs: set[Subscriber] = set(self.everything)
        for index in (self.by_task, self.by_owner, self.by_pipeline):
            for group in index.values():
                subs.update(group)
        return len(subs)

    def each_target(
        self, task_id: int, owner_id: int | None, pipeline_id: int | None
    ) -> Iterator[Subscriber]:
        """The subscribers of a task's events (one may come more than once)."""
        yield from self.everything
        yield from self.by_task.get(task_id, ())
        if owner_id is not None:
            yield from self.by_owner.get(owner_id, ())
        if pipeline_id is not None:
            yield from self.by_pipeline.get(pipeline_id, ())

    def targets(
        self, task_id: int, owner_id: int | None, pipeline_id: int | None
    ) -> set[Subscriber]:
        return set(self.each_target(task_id, owner_id, pipeline_id))

    def of_pipeline(self, pipeline_id: int, owner_id: int) -> set[Subscriber]:
        """The subscribers of a pipeline's own events."""
        targets = set(self.everything)
        targets.update(self.by_owner.get(owner_id, ()))
        targets.update(self.by_pipeline.get(pipeline_id, ()))
        return targets


def _drop(index: dict[int, set[Subscriber]], key: int, sub: Subscriber) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
