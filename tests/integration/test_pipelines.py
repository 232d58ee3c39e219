"""Pipelines on the embedded executor and the test database: hand-off of outputs,
parallel groups, pause/resume, cancel with reverse rollback, failure and retry."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration import pipeline_tasks as pt
from tests.integration.conftest import wait_until
from tether.exceptions import InvalidParams
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Pipeline, PipelineEvent, PipelineStep, Task
from tether.pipelines import control, spec
from tether.pipelines.moves import IllegalPipelineMove


def doc(*steps: tuple[str, int, dict[str, Any]], data_url: str = "") -> dict[str, Any]:
    return {
        "pipeline_name": "p",
        "project": "proj",
        "data_url": data_url,
        "transformers_list": [
            {"name": "it_step", "order_no": order, "context": {"label": label, **extra}}
            for label, order, extra in steps
        ],
    }


def wait_pipeline(pid: int, *statuses: str, timeout: float = 20.0) -> Pipeline:
    return wait_until(
        lambda: (p := Pipeline.objects.get(pk=pid)).status in statuses and p,
        f"pipeline {pid} to be {statuses}",
        timeout,
    )


def step_task(pid: int, index: int) -> Task:
    """The step's task, once its order has started."""
    return wait_until(
        lambda: PipelineStep.objects.get(pipeline_id=pid, index=index).task,
        f"step {index} of pipeline {pid} to start",
    )


@pytest.fixture
def alice(make_user: Any) -> Any:
    pt.clear_ledger()
    return make_user("alice")


def test_outputs_flow_through_orders_and_parallel_groups(
    executor: EmbeddedExecutor, alice: Any
) -> None:
    body = doc(("a", 1, {}), ("b1", 2, {}), ("b2", 2, {}), ("c", 3, {}))
    pipeline = control.create(alice, spec.parse(body))
    done = wait_pipeline(pipeline.pk, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    a = {"label": "a", "input": None}
    group = [{"label": "b1", "input": a}, {"label": "b2", "input": a}]
    assert done.result == {"label": "c", "input": group}
    assert sorted(pt.ledger()) == ["run:a", "run:b1", "run:b2", "run:c"]
    events = list(
        PipelineEvent.objects.filter(pipeline=pipeline).values_list("from_status", "to_status")
    )
    assert events[0] == (None, "queued") and events[-1] == ("running", "succeeded")


def test_cancel_undoes_finished_steps_in_reverse_order(
    executor: EmbeddedExecutor, alice: Any
) -> None:
    body = doc(("a", 1, {}), ("b", 2, {}), ("c", 3, {"ticks": 2000, "tick_ms": 5}))
    pipeline = control.create(alice, spec.parse(body))
    wait_until(lambda: step_task(pipeline.pk, 2).status == "running", "step c to run")
    wait_until(lambda: (step_task(pipeline.pk, 2).checkpoint or {}).get("tick"), "c to tick")
    control.cancel(pipeline.pk, actor="user:alice")
    done = wait_pipeline(pipeline.pk, "cancelled", "failed")
    assert done.status == "cancelled", done.error
    assert pt.ledger() == ["run:a", "run:b", "undo:c", "undo:b", "undo:a"]
    steps = list(PipelineStep.objects.filter(pipeline=pipeline).order_by("index"))
    undone = [s.rolled_back_at for s in steps]
    assert all(undone) and undone == sorted(undone, reverse=True)  # type: ignore[type-var]


def test_pause_then_resume_continues(executor: EmbeddedExecutor, alice: Any) -> None:
    body = doc(("a", 1, {}), ("b", 2, {"ticks": 300, "tick_ms": 5}), ("c", 3, {}))
    pipeline = control.create(alice, spec.parse(body))
    wait_until(
        lambda: (
            (step_task(pipeline.pk, 1).checkpoint or {}).get("tick")
            if step_task(pipeline.pk, 1)
            else None
        ),
        "b ticks",
    )
    control.pause(pipeline.pk, actor="user:alice")
    paused = wait_pipeline(pipeline.pk, "paused")
    assert step_task(pipeline.pk, 1).status == "paused"
    assert paused.current_order == 2
    with pytest.raises(IllegalPipelineMove):
        control.pause(pipeline.pk, actor="user:alice")
    control.resume(pipeline.pk, actor="user:alice")
    done = wait_pipeline(pipeline.pk, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    assert pt.ledger() == ["run:a", "run:b", "run:c"]


def test_failed_step_fails_the_pipeline_and_retry_runs_it_again(
    executor: EmbeddedExecutor, alice: Any
) -> None:
    body = doc(("a", 1, {}), ("b", 2, {"fail": True}), ("c", 3, {}))
    pipeline = control.create(alice, spec.parse(body))
    failed = wait_pipeline(pipeline.pk, "failed")
    assert "step it_step (order 2, transformers_list[1]) failed" in failed.error
    first = step_task(pipeline.pk, 1)
    Task.objects.filter(pk=first.pk).update(checkpoint={"healed": True})  # fixed meanwhile
    PipelineStep.objects.filter(pipeline=pipeline, index=1).update(
        context={"label": "b", "fail": False, "ticks": 0, "tick_ms": 10}
    )
    control.retry(pipeline.pk, actor="user:alice")
    done = wait_pipeline(pipeline.pk, "succeeded", "failed")
    assert done.status == "succeeded", done.error
    assert step_task(pipeline.pk, 1).pk != first.pk
    assert pt.ledger() == ["run:a", "run:b", "run:c"]


def test_bad_step_names_its_index_and_field(alice: Any) -> None:
    with pytest.raises(InvalidParams) as err:
        spec.parse(doc(("a", 1, {}), ("b", 2, {"ticks": "x"})))
    assert err.value.extra["field"] == "transformers_list[1].context.ticks"
    with pytest.raises(InvalidParams):
        spec.parse({**doc(("a", 1, {})), "transformers_list": []})
    assert not Pipeline.objects.exists()


def test_pause_expiry_cancels_the_pipeline_with_rollback(
    executor: EmbeddedExecutor, alice: Any
) -> None:
    body = {
        **doc(("a", 1, {}), ("b", 2, {"ticks": 3000, "tick_ms": 5})),
        "pause_timeout": 0.5,
    }
    pipeline = control.create(alice, spec.parse(body))
    wait_until(lambda: (step_task(pipeline.pk, 1).checkpoint or {}).get("tick"), "b to tick")
    control.pause(pipeline.pk, actor="user:alice")
    done = wait_pipeline(pipeline.pk, "cancelled", "failed")
    assert done.status == "cancelled", done.error
    reasons = PipelineEvent.objects.filter(pipeline=pipeline, to_status="cancelling")
    assert [e.reason for e in reasons] == ["pause_expired"]
    assert pt.ledger() == ["run:a", "undo:b", "undo:a"]
    statuses = list(
        PipelineEvent.objects.filter(pipeline=pipeline).values_list("to_status", flat=True)
    )
    assert "queued" not in statuses[1:]  # never looked resumed on its way to cancel


def test_cancelling_a_step_cancels_the_pipeline(executor: EmbeddedExecutor, alice: Any) -> None:
    from tether import service

    body = doc(
        ("a", 1, {}),
        ("b", 2, {"ticks": 3000, "tick_ms": 5}),
        ("c", 2, {"ticks": 3000, "tick_ms": 5}),
    )
    pipeline = control.create(alice, spec.parse(body))
    wait_until(lambda: (step_task(pipeline.pk, 2).checkpoint or {}).get("tick"), "c to tick")
    service.cancel(step_task(pipeline.pk, 1).pk, actor="user:alice", reason="not needed")
    done = wait_pipeline(pipeline.pk, "cancelled", "failed")
    assert done.status == "cancelled", done.error
    assert step_task(pipeline.pk, 2).status == "cancelled"  # its sibling too
    assert sorted(pt.ledger()) == ["run:a", "undo:a", "undo:b", "undo:c"]
    assert pt.ledger()[-1] == "undo:a"


def test_a_failed_pipeline_can_be_cancelled_to_undo_its_finished_steps(
    executor: EmbeddedExecutor, alice: Any
) -> None:
    body = doc(("a", 1, {}), ("b1", 2, {}), ("b2", 2, {"fail": True}))
    pipeline = control.create(alice, spec.parse(body))
    failed = wait_pipeline(pipeline.pk, "failed")
    assert "step it_step (order 2, transformers_list[2]) failed" in failed.error
    wait_until(lambda: step_task(pipeline.pk, 1).status == "succeeded", "its sibling to end")
    control.cancel(pipeline.pk, actor="user:alice", reason="give up")
    done = wait_pipeline(pipeline.pk, "cancelled", "failed")
    assert done.status == "cancelled", done.error
    assert pt.ledger() == ["run:a", "run:b1", "undo:b1", "undo:a"]
    with pytest.raises(IllegalPipelineMove):
        control.cancel(pipeline.pk, actor="user:alice")
