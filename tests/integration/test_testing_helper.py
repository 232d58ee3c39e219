"""tether.testing.run_task under pytest-django: the test database, the embedded executor,
pause/resume and cancel requested at the task's first progress report."""

from __future__ import annotations

from typing import Any

import pytest

from tether import registry, task
from tether.context import TaskContext
from tether.exceptions import InvalidParams, UnknownTaskType
from tether.testing import TEST_USER, run_task, statuses

ROLLBACKS: list[tuple[int, dict[str, Any]]] = []


def _undo(ctx: TaskContext) -> None:
    ROLLBACKS.append((ctx.task_id, dict(ctx.state)))


PIECES_TYPE: dict[str, Any] = {
    "name": "it_testing_pieces",
    "rollback": _undo,
    "params": {
        "type": "object",
        "properties": {"pieces": {"type": "integer", "minimum": 1, "default": 3}},
        "additionalProperties": False,
    },
}


def pieces(ctx: TaskContext, *, pieces: int) -> dict[str, Any]:
    done = ctx.state.get("done", 0)
    starts = [*ctx.state.get("starts", []), done]  # where each run began
    for i in range(done, pieces):
        with ctx.atomic({"done": i + 1, "starts": starts}):
            pass
        ctx.progress(i + 1, total=pieces)
    return {"input": ctx.input, "starts": starts, "owner": ctx.owner_id}


@pytest.fixture(scope="module", autouse=True)
def _pieces_type() -> Any:
    # registered here, not at import: pytest-django runs this module's tests apart
    # (those needing transactions last), setting this fixture up once for each run
    task(**PIECES_TYPE)(pieces)
    yield
    registry.unregister("it_testing_pieces")


def test_runs_to_the_end_with_its_input(transactional_db: None) -> None:
    t = run_task("it_testing_pieces", {"pieces": 3}, input={"path": "in/a.csv"})
    assert t.status == "succeeded", t.error
    assert t.result == {"input": {"path": "in/a.csv"}, "starts": [0], "owner": t.owner_id}
    assert t.owner.get_username() == TEST_USER
    assert statuses(t) == ["queued", "running", "succeeded"]


def test_pause_at_first_progress_then_resume_continues_from_the_checkpoint(
    transactional_db: None,
) -> None:
    t = run_task("it_testing_pieces", {"pieces": 3}, interrupt="pause")
    assert t.status == "succeeded", t.error
    assert t.result is not None
    assert t.result["starts"] == [0, 1]  # the second run began after the first piece
    assert statuses(t) == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]


def test_cancel_at_first_progress_runs_the_rollback(transactional_db: None) -> None:
    ROLLBACKS.clear()
    t = run_task("it_testing_pieces", {"pieces": 3}, interrupt="cancel")
    assert t.status == "cancelled", t.error
    assert list(ROLLBACKS) == [(t.pk, {"done": 1, "starts": [0]})]
    assert statuses(t)[-2:] == ["cancelling", "cancelled"]


def test_an_interrupt_too_late_leaves_the_task_as_it_ended(transactional_db: None) -> None:
    """The last progress report comes after the last control point: no pause lands."""
    t = run_task("it_testing_pieces", {"pieces": 1}, interrupt="pause")
    assert t.status == "succeeded"
    assert "paused" not in statuses(t)


def test_submission_errors_are_raised(transactional_db: None) -> None:
    with pytest.raises(UnknownTaskType):
        run_task("it_testing_nothing")
    with pytest.raises(InvalidParams, match="pieces"):
        run_task("it_testing_pieces", {"pieces": 0})
    with pytest.raises(ValueError, match="interrupt"):
        run_task("it_testing_pieces", interrupt="stop")  # type: ignore[arg-type]


def test_timeout(transactional_db: None) -> None:
    with pytest.raises(TimeoutError, match="still"):
        run_task("countdown", {"seconds": 120, "tick_ms": 10}, timeout=0.5)


def test_refused_inside_a_transaction(db: None) -> None:
    with pytest.raises(RuntimeError, match=r"transaction=True"):
        run_task("it_testing_pieces")
