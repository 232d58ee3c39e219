"""Stop kinds are one enum: contexts, the control board and the Celery broadcast use it,
and its value (plain JSON) is what travels between processes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.fakes import MemoryStore
from tether.context import KEEP_WORK_ON, TaskContext
from tether.exceptions import SIGNALS, StopKind
from tether.executors.board import STOP_FOR
from tether.states import Status


def test_each_kind_has_its_signal_and_the_signal_names_it() -> None:
    assert set(SIGNALS) == set(StopKind)
    assert all(signal.kind is kind for kind, signal in SIGNALS.items())


def test_what_each_kind_means() -> None:
    assert {StopKind.PAUSE, StopKind.SHUTDOWN} == KEEP_WORK_ON
    assert {k for k in StopKind if k.requested} == {StopKind.PAUSE, StopKind.CANCEL}
    assert STOP_FOR == {Status.PAUSING: StopKind.PAUSE, Status.CANCELLING: StopKind.CANCEL}


def test_context_takes_a_kind_or_its_value_and_reports_the_kind() -> None:
    ctx = TaskContext(task_id=1, token="t", store=MemoryStore())
    ctx.request_stop("pause")
    assert ctx.stop_requested is StopKind.PAUSE
    ctx.request_stop(StopKind.CANCEL)
    assert ctx.stop_requested is StopKind.CANCEL


class FakeControl:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def broadcast(self, command: str, arguments: dict[str, Any]) -> None:
        self.sent.append((command, arguments))


class FakeApp:
    def __init__(self) -> None:
        self.control = FakeControl()


def test_the_broadcast_carries_the_plain_value() -> None:
    from tether.executors.celery_executor import CONTROL, Publisher

    app = FakeApp()
    Publisher(app).broadcast(7, StopKind.PAUSE)
    [(command, arguments)] = app.control.sent
    assert command == CONTROL
    assert json.dumps(arguments) == '{"task_id": 7, "kind": "pause"}'
    assert type(arguments["kind"]) is str


@pytest.mark.parametrize("kind", ["explode", "shutdown", "lease_lost"])
def test_the_control_command_ignores_what_users_cannot_ask(kind: str) -> None:
    from tether.executors.celery_executor import tether_control

    answer = tether_control(None, 7, kind)
    assert answer["ok"] is (kind != "explode")
