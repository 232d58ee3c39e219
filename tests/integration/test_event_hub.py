"""The hub, fed by the engine's commits: order, replay with since, tenancy, recovery of
a change whose message never arrived, pipelines and their tasks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration import pipeline_tasks as pt
from tests.integration import tasks  # noqa: F401 (registers it_ledger)
from tests.integration.conftest import wait_until
from tether import service
from tether.events import bus
from tether.events.hub import Hub, SinceAhead
from tether.events.subscriber import Subscriber
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Pipeline, PipelineEvent, PipelineStep, Task, TaskEvent
from tether.pipelines import control, spec
from tether.server.ws_commands import CommandError, check_visible_pipelines

pytestmark = pytest.mark.django_db(transaction=True)


class Listener:
    """A subscriber read by an event loop in its own thread, collecting events."""

    def __init__(self, hub: Hub, user: Any, **interest: Any) -> None:
        self.hub = hub
        self.events: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.sub = Subscriber(user.id, user.is_staff, self.loop)
        hub.subscribe(self.sub, **interest)
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._read(),))
        self._thread.start()

    async def _read(self) -> None:
        while True:
            for frame in await self.sub.frames(self.hub.load_replay):
                event = json.loads(frame)
                if event.get("type") == "stop":
                    return
                self.events.append(event)

    def statuses(self, task_id: int) -> list[str]:
        return [e["to"] for e in self.events if e["kind"] == "status" and e["task"] == task_id]

    def close(self) -> None:
        self.hub.detach(self.sub)
        if self.sub.push_status('{"type": "stop"}'):
            self.loop.call_soon_threadsafe(self.sub.wake)
        self._thread.join(10)
        self.loop.close()


@pytest.fixture
def hub(transactional_db: None) -> Iterator[Hub]:
    h = Hub()
    h.start()
    yield h
    h.stop()


@pytest.fixture
def listen(hub: Hub) -> Iterator[Callable[..., Listener]]:
    made: list[Listener] = []

    def make(user: Any, **interest: Any) -> Listener:
        made.append(Listener(hub, user, **interest))
        return made[-1]

    yield make
    for listener in made:
        listener.close()


def test_a_task_is_heard_from_queued_to_succeeded_in_order_with_progress(
    executor: EmbeddedExecutor, make_user: Callable[..., Any], listen: Callable[..., Listener]
) -> None:
    alice = make_user("alice")
    heard = listen(alice, mine=True)
    task = service.submit(alice, "it_ledger", {"steps": 400, "step_ms": 2})
    wait_until(lambda: any(e["kind"] == "progress" for e in heard.events), "a progress event")
    service.pause(task.pk, actor="test")
    wait_until(lambda: "paused" in heard.statuses(task.pk), "paused")
    service.resume(task.pk, actor="test")
    wait_until(lambda: "succeeded" in heard.statuses(task.pk), "succeeded", timeout=30)
    assert heard.statuses(task.pk) == [
        "queued", "running", "pausing", "paused", "queued", "running", "succeeded"
    ]  # fmt: skip
    stored = list(TaskEvent.objects.filter(task=task).order_by("id").values_list("id", flat=True))
    assert [e["id"] for e in heard.events if e["kind"] == "status"] == stored
    first = heard.events[0]
    assert first["owner"] == "alice" and first["task_type"] == "it_ledger"
    assert first["from"] is None and first["actor"] == "user:alice"
    progress = [e for e in heard.events if e["kind"] == "progress"]
    assert progress[0]["id"] is None and progress[0]["progress"]["total"] == 400
    last = wait_until(
        lambda: next((e for e in progress_of(heard) if e["progress"]["done"] == 400), None),
        "the last figures, written with the success",
    )
    assert last["at"] is not None
    succeeded = next(e for e in heard.events if e.get("to") == "succeeded")
    assert heard.events.index(last) < heard.events.index(succeeded)  # the bar ends, then it


def progress_of(heard: Listener) -> list[dict[str, Any]]:
    return [e for e in heard.events if e["kind"] == "progress"]


def test_since_replays_the_history_then_live_events_without_gap_or_repeat(
    executor: EmbeddedExecutor, make_user: Callable[..., Any], listen: Callable[..., Listener]
) -> None:
    alice = make_user("alice")
    first = service.submit_many(alice, "add", [{"operand1": i, "operand2": 1} for i in range(50)])
    since = TaskEvent.objects.filter(task=first[25]).order_by("id").first().pk  # type: ignore[union-attr]
    heard = listen(alice, mine=True, since=since)  # while the first burst still runs
    more = service.submit_many(alice, "add", [{"operand1": i, "operand2": 2} for i in range(50)])
    ids = [t.pk for t in first + more]

    def all_heard() -> bool:
        done = TaskEvent.objects.filter(task_id__in=ids, to_status="succeeded").count()
        if done < len(ids):
            return False
        wanted = list(
            TaskEvent.objects.filter(task_id__in=ids, id__gt=since)
            .order_by("id")
            .values_list("id", flat=True)
        )
        return [e["id"] for e in heard.events if e["kind"] == "status"] == wanted

    wait_until(all_heard, "every event after since, once, in order", timeout=30)


def test_a_subscriber_never_hears_another_users_tasks(
    executor: EmbeddedExecutor, make_user: Callable[..., Any], listen: Callable[..., Listener]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    heard = listen(alice, mine=True)
    theirs = service.submit(bob, "add", {"operand1": 1, "operand2": 2})
    mine = service.submit(alice, "add", {"operand1": 1, "operand2": 2})
    wait_until(lambda: "succeeded" in heard.statuses(mine.pk), "alice's task to succeed")
    wait_until(
        lambda: TaskEvent.objects.filter(task=theirs, to_status="succeeded").exists(),
        "bob's task to succeed",
    )
    assert {e["task"] for e in heard.events} == {mine.pk}
    assert {e["owner"] for e in heard.events} == {"alice"}


def test_a_change_whose_message_was_lost_is_read_from_the_history(
    hub: Hub, make_user: Callable[..., Any], listen: Callable[..., Listener]
) -> None:
    alice = make_user("alice")
    heard = listen(alice, mine=True)
    bus.remove_sink(hub.ingest)  # as if the message from another process were lost
    try:
        task = service.submit(alice, "add", {"operand1": 1, "operand2": 2})
    finally:
        bus.add_sink(hub.ingest)
    wait_until(lambda: heard.statuses(task.pk) == ["queued"], "the lost event, from the history")


def test_a_since_past_every_event_is_refused(hub: Hub, make_user: Callable[..., Any]) -> None:
    alice = make_user("alice")
    task = service.submit(alice, "add", {"operand1": 1, "operand2": 2})
    newest = TaskEvent.objects.get(task=task).pk
    wait_until(lambda: hub.delivered >= newest, "the hub to hear the submission")
    sub = Subscriber(alice.id, False, asyncio.new_event_loop())
    with pytest.raises(SinceAhead, match=f"since {newest + 1_000_000} is past the newest event"):
        hub.subscribe(sub, mine=True, since=newest + 1_000_000)
    assert hub.subscribe(sub, mine=True, since=newest) == newest  # up to date: nothing to replay
    hub.detach(sub)
    sub.loop.close()


# -- pipelines ------------------------------------------------------------------------------
def pipeline_doc(*labels: str, ticks: int = 5) -> dict[str, Any]:
    """One it_step per order, each ticking (progress) ``ticks`` times."""
    steps = [
        {"name": "it_step", "order_no": i + 1, "context": {"label": label, "ticks": ticks}}
        for i, label in enumerate(labels)
    ]
    return {"pipeline_name": "two", "project": "p", "data_url": "", "transformers_list": steps}


def step_task(pipeline_id: int, index: int) -> int:
    task_id = PipelineStep.objects.get(pipeline_id=pipeline_id, index=index).task_id
    assert task_id is not None, f"step {index} has not started"
    return task_id


def pipeline_frames(heard: Listener, pid: int) -> list[dict[str, Any]]:
    return [e for e in heard.events if e["kind"] == "pipeline" and e["pipeline"] == pid]


def test_a_pipeline_subscriber_hears_the_pipeline_and_every_task_of_it(
    hub: Hub, make_user: Callable[..., Any], listen: Callable[..., Listener]
) -> None:
    alice = make_user("alice")
    pt.clear_ledger()
    mine = listen(alice, mine=True)
    pipeline = control.create(alice, spec.parse(pipeline_doc("a", "b")))
    first = step_task(pipeline.pk, 0)
    wait_until(lambda: pipeline_frames(mine, pipeline.pk), "the pipeline's creation")
    wait_until(lambda: mine.statuses(first) == ["queued"], "its first task's creation")
    heard = listen(alice, pipelines=[pipeline.pk])  # before anything runs: no executor yet
    other = service.submit(alice, "add", {"operand1": 1, "operand2": 2})
    executor = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.1)
    executor.start()
    try:
        wait_until(
            lambda: [e["to"] for e in pipeline_frames(heard, pipeline.pk)][-1:] == ["succeeded"],
            "the pipeline's success",
            timeout=30,
        )
        wait_until(lambda: "succeeded" in mine.statuses(other.pk), "the other task's success")
    finally:
        executor.stop(timeout=5)
    second = step_task(pipeline.pk, 1)
    assert second > first  # created after the subscription
    moves = [(e["from"], e["to"]) for e in pipeline_frames(mine, pipeline.pk)]
    assert moves == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]
    created = pipeline_frames(mine, pipeline.pk)[0]
    assert created["tasks"] == [first] and created["owner"] == "alice"
    history = PipelineEvent.objects.filter(pipeline=pipeline).values_list("id", flat=True)
    assert created["name"] == "two" and created["event"] == min(history)
    assert [e["to"] for e in pipeline_frames(heard, pipeline.pk)] == ["running", "succeeded"]
    assert all(e["id"] is None for e in pipeline_frames(heard, pipeline.pk))

    assert heard.statuses(first) == ["running", "succeeded"]  # its queued came before
    assert heard.statuses(second) == ["queued", "running", "succeeded"]
    statuses = [e for e in heard.events if e["kind"] == "status"]
    assert {e["pipeline"] for e in statuses} == {pipeline.pk}
    assert {e["task"] for e in heard.events if "task" in e} == {first, second}  # not `other`
    outside = [e for e in mine.events if e["kind"] == "status" and e["task"] == other.pk]
    assert [e["pipeline"] for e in outside] == [None, None, None]
    done = [e["progress"]["done"] for e in progress_of(heard) if e["task"] == second]
    assert done and done[-1] == 5  # progress of a task it was never told about by id
    # a step's change goes out before the pipeline's change it caused
    last = next(e for e in statuses if e["task"] == second and e["to"] == "succeeded")
    assert heard.events.index(last) < heard.events.index(pipeline_frames(heard, pipeline.pk)[-1])


def test_since_replays_a_pipelines_task_events_not_its_own(
    executor: EmbeddedExecutor,
    hub: Hub,
    make_user: Callable[..., Any],
    listen: Callable[..., Listener],
) -> None:
    alice = make_user("alice")
    pt.clear_ledger()
    pipeline = control.create(alice, spec.parse(pipeline_doc("a", "b", ticks=0)))
    wait_until(
        lambda: Pipeline.objects.get(pk=pipeline.pk).status == "succeeded", "success", timeout=30
    )
    service.submit(alice, "add", {"operand1": 1, "operand2": 2})  # not of the pipeline
    steps = list(Task.objects.filter(pipeline=pipeline).values_list("id", flat=True))
    wanted = list(
        TaskEvent.objects.filter(task_id__in=steps).order_by("id").values_list("id", flat=True)
    )
    newest = TaskEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
    wait_until(lambda: hub.delivered >= newest, "the hub to hear everything")
    heard = listen(alice, pipelines=[pipeline.pk], since=0)
    wait_until(
        lambda: [e["id"] for e in heard.events if e["kind"] == "status"] == wanted,
        "the pipeline's task events, from the history",
    )
    assert not pipeline_frames(heard, pipeline.pk)  # its own are not replayed


def test_only_its_owner_and_staff_may_follow_a_pipeline(make_user: Callable[..., Any]) -> None:
    alice, bob, root = make_user("alice"), make_user("bob"), make_user("root", staff=True)
    pipeline = control.create(alice, spec.parse(pipeline_doc("a")))
    check_visible_pipelines(alice, (pipeline.pk,))
    check_visible_pipelines(root, (pipeline.pk,))
    with pytest.raises(CommandError) as caught:
        check_visible_pipelines(bob, (pipeline.pk, pipeline.pk + 1000))
    assert caught.value.error == {
        "code": "not_found",
        "message": f"no pipeline {pipeline.pk} (and 1 more)",
        "pipelines": [pipeline.pk, pipeline.pk + 1000],
    }
