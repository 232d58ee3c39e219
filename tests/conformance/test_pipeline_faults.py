"""Pipelines exactly once through faults of a Celery deployment's other parts: the
API server killed mid-step (the workers hand the pipeline on without it) and the
broker losing a step's message (it is published again and runs once). The worker
killed mid-step and parallel steps finishing together are in test_pipelines.py."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.acceptance.conftest import get_task, wait_progress, wait_until
from tests.conformance.conftest import GPU_QUEUE, Deployment, statuses, task_ids
from tests.conformance.pipeline_helpers import (
    STEP,
    doc,
    settle_pipelines,
    step,
    step_task,
    submit_pipeline,
    task_history,
    wait_pipeline,
)


@pytest.fixture
def pipes(deployment: Deployment, api: httpx.Client) -> Iterator[httpx.Client]:
    if not deployment.workers:
        pytest.skip(
            "the embedded executor runs inside tether serve and has no broker: "
            "test_pipelines.py kills and restarts that server mid-step"
        )
    yield api
    if deployment.server.proc is not None and all(w.alive() for w in deployment.workers):
        settle_pipelines(api)


def assert_each_step_ran_once(dep: Deployment, client: httpx.Client, pid: int) -> None:
    done = wait_pipeline(client, pid)
    assert done["status"] == "succeeded", done
    steps = done["steps"]
    assert dep.pipeline_ledger(pid) == [("run", s["context"]["label"], s["task"]) for s in steps]
    assert sorted(task_ids(client, type=STEP)) == sorted(s["task"] for s in steps)
    for s in steps:
        assert statuses(task_history(client, s["task"])) == ["queued", "running", "succeeded"]
    a = {"label": "a", "input": None}
    assert done["result"] == {"label": "c", "input": {"label": "b", "input": a}}


def test_the_workers_go_on_while_tether_serve_is_dead(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    """SIGKILL of the API server mid-step: the step's worker finishes it and starts the
    next one in the same transaction, so the pipeline ends while the server is down."""
    body = doc([step("a", 1), step("b", 2, ticks=200, tick_ms=20), step("c", 3)])
    pid = submit_pipeline(pipes, body)["id"]
    wait_progress(pipes, step_task(pipes, pid, 1), 5, timeout=60)
    server = deployment.server
    server.kill()
    try:
        wait_until(
            lambda: ("run", "c") in [(w, label) for w, label, _ in deployment.pipeline_ledger(pid)],
            "the last step to run while tether serve is down",
            timeout=120,
        )
    finally:
        server.start()
        pipes.base_url = httpx.URL(f"{server.url}/api/v1/")
    assert_each_step_ran_once(deployment, pipes, pid)


def purge(broker_url: str, queue: str) -> int:
    """Drop the messages waiting in ``queue``: how many there were."""
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as conn:
        return int(conn.default_channel.queue_purge(queue) or 0)


def test_a_step_whose_message_the_broker_lost_runs_once(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    """Step b's queue has no consumer (its worker is stopped) when its message is
    dropped from the broker: it is published again, several times while it waits,
    and runs exactly once when a worker serves its queue again."""
    assert deployment.broker_url is not None
    gpu = next(w for w in deployment.workers if w.queues == GPU_QUEUE)
    gpu.terminate()
    gpu.wait()
    try:
        body = doc([step("a", 1), step("b", 2, queue=GPU_QUEUE), step("c", 3)])
        pid = submit_pipeline(pipes, body)["id"]
        b_task = step_task(pipes, pid, 1)
        assert get_task(pipes, b_task)["status"] == "queued"
        lost = wait_until(
            lambda: purge(deployment.broker_url or "", GPU_QUEUE),
            f"a message of task {b_task} in the broker",
            timeout=60,
        )
        assert lost >= 1
        assert get_task(pipes, b_task)["status"] == "queued"
    finally:
        gpu.start()
        wait_until(gpu.ready, "the gpu worker ready again", timeout=60)
    assert_each_step_ran_once(deployment, pipes, pid)
