"""Pipelines on every deployment, through the HTTP API: outputs handed on through a
parallel group whose steps run on two queues served by different workers, pause and
resume, cancel with the finished steps undone in reverse order, a worker (or the
embedded server) killed mid-step, a failed step retried, the seed's payload, and the
next order started exactly once when parallel steps finish together.

The steps (tests/acceptance/pipeline_steps.py) record each run and rollback in a
ledger table, at most once per task: the ledger read from the deployment's database
proves what ran, in which order, and how often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import assert_error, get_task, wait_progress, wait_until
from tests.conformance.conftest import GPU_QUEUE, Deployment, statuses, task_ids
from tests.conformance.pipeline_helpers import (
    JOIN,
    STEP,
    at,
    claimed_by,
    control,
    doc,
    get_pipeline,
    moves,
    pipeline_history,
    settle_pipelines,
    step,
    step_task,
    step_tasks,
    submit_pipeline,
    task_history,
    wait_pipeline,
)

DATA_URL = "https://93.184.215.14/scenes.csv"  # public: accepted, never fetched here
SEED = {
    "pipeline_name": "sentinel_pipeline",
    "data_url": "",
    "project": "ids-drr",
    "transformers_list": [
        {"name": "sentinel", "order_no": 1, "context": {"date_start": "2023-05-01"}},
        {"name": "sentinel_upload_to_s3", "order_no": 2, "context": {}},
    ],
}
LONG_TICKS = 3000  # with 10 ms ticks: a step that runs until it is stopped


@pytest.fixture
def pipes(deployment: Deployment, api: httpx.Client) -> Iterator[httpx.Client]:
    """``api``, whose unfinished pipelines are cancelled and waited for at teardown."""
    yield api
    if deployment.server.proc is not None and all(w.alive() for w in deployment.workers):
        settle_pipelines(api)


def ledger_of(dep: Deployment, pipeline_id: int) -> list[tuple[str, str]]:
    return [(what, label) for what, label, _ in dep.pipeline_ledger(pipeline_id)]


def test_outputs_flow_through_a_parallel_group_on_two_queues(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    body = doc(
        [step("a", 1), step("b1", 2), step("b2", 2, queue=GPU_QUEUE), step("c", 3)],
        data_url=DATA_URL,
    )
    created = submit_pipeline(pipes, body)
    pid = created["id"]
    assert created["name"] == "p" and created["project"] == "conformance", created
    assert created["status"] in ("queued", "running"), created
    assert [(s["index"], s["order_no"], s["name"], s["queue"]) for s in created["steps"]] == [
        (0, 1, STEP, "default"),
        (1, 2, STEP, "default"),
        (2, 2, STEP, GPU_QUEUE),
        (3, 3, STEP, "default"),
    ]
    assert created["steps"][0]["task"] is not None
    assert [s["task"] for s in created["steps"][1:]] == [None, None, None], created
    assert [s["status"] for s in created["steps"][1:]] == ["pending"] * 3, created

    done = wait_pipeline(pipes, pid)
    assert done["status"] == "succeeded", done
    a = {"label": "a", "input": DATA_URL}
    b1, b2 = {"label": "b1", "input": a}, {"label": "b2", "input": a}
    assert done["result"] == {"label": "c", "input": [b1, b2]}  # in transformers_list order
    assert [s["status"] for s in done["steps"]] == ["succeeded"] * 4, done
    assert done["started_at"] and done["finished_at"] and not done["error"], done
    tasks = step_tasks(pipes, done)
    assert [t["result"] for t in tasks] == [a, b1, b2, done["result"]]
    assert [t["queue"] for t in tasks] == ["default", "default", GPU_QUEUE, "default"]
    assert [(t["type"], t["pipeline"]) for t in tasks] == [(STEP, pid)] * 4
    # each order started after the one before had finished
    assert at(tasks[0]["finished_at"]) <= min(
        at(tasks[1]["started_at"]), at(tasks[2]["started_at"])
    )
    assert max(at(tasks[1]["finished_at"]), at(tasks[2]["finished_at"])) <= at(
        tasks[3]["started_at"]
    )
    ledger = deployment.pipeline_ledger(pid)
    assert sorted(ledger) == sorted(
        ("run", s["context"]["label"], s["task"]) for s in done["steps"]
    )

    runners = [claimed_by(pipes, t["id"]) for t in tasks]
    assert all(len(r) == 1 for r in runners), runners
    if deployment.workers:  # Celery: the gpu step on the gpu worker, the rest elsewhere
        gpu = [w.worker_id for w in deployment.workers if w.queues == GPU_QUEUE]
        others = {w.worker_id for w in deployment.workers if w.queues != GPU_QUEUE}
        assert runners[2] == gpu, (runners, gpu)
        assert {r[0] for i, r in enumerate(runners) if i != 2} <= others, (runners, others)
    else:  # the embedded executor serves every queue
        assert all(r[0].startswith("embedded:") for r in runners), runners

    history = moves(pipeline_history(pipes, pid))
    assert history[:2] == ["queued", "running"] and history[-1] == "succeeded", history
    listed = pipes.get("/pipelines", params={"project": "conformance"})
    assert listed.status_code == 200, listed.text
    assert [p["id"] for p in listed.json()["results"]] == [pid]


def test_pause_during_step_two_then_resume_runs_each_step_once(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    body = doc([step("a", 1), step("b", 2, ticks=400, tick_ms=10), step("c", 3)])
    pid = submit_pipeline(pipes, body)["id"]
    b_task = step_task(pipes, pid, 1)
    wait_progress(pipes, b_task, 5, timeout=60)

    assert control(pipes, pid, "pause")["status"] in ("pausing", "paused")
    paused = wait_pipeline(pipes, pid, "paused", timeout=60)
    assert paused["paused_at"], paused
    assert [s["status"] for s in paused["steps"]] == ["succeeded", "paused", "pending"], paused
    assert paused["steps"][2]["task"] is None  # no step starts while paused
    held = get_task(pipes, b_task)
    assert held["status"] == "paused" and held["progress"]["done"] < 400, held
    assert ledger_of(deployment, pid) == [("run", "a")]
    assert_error(pipes.post(f"/pipelines/{pid}/pause", json={}), 409, "illegal_transition")

    assert control(pipes, pid, "resume")["status"] in ("queued", "running")
    done = wait_pipeline(pipes, pid)
    assert done["status"] == "succeeded", done
    steps = done["steps"]
    assert [s["task"] for s in steps[:2]] == [paused["steps"][0]["task"], b_task]
    assert deployment.pipeline_ledger(pid) == [
        ("run", s["context"]["label"], s["task"]) for s in steps
    ]
    assert sorted(task_ids(pipes, type=STEP)) == sorted(s["task"] for s in steps)
    b = done["result"]["input"]
    assert b["label"] == "b" and b["resumed_from"] >= 5, b  # from its checkpoint
    assert statuses(task_history(pipes, b_task)) == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]
    assert moves(pipeline_history(pipes, pid)) == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]


def test_cancel_during_step_three_rolls_back_three_two_one(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    body = doc([step("a", 1), step("b", 2), step("c", 3, ticks=LONG_TICKS, tick_ms=10)])
    pid = submit_pipeline(pipes, body)["id"]
    c_task = step_task(pipes, pid, 2)
    wait_progress(pipes, c_task, 5, timeout=60)

    assert control(pipes, pid, "cancel")["status"] in ("cancelling", "cancelled")

    def settled() -> dict[str, Any] | None:
        p = get_pipeline(pipes, pid)
        undone = [w for w, _ in ledger_of(deployment, pid) if w == "undo"]  # read after p
        if p["status"] == "cancelled":
            assert len(undone) == 3, (p, undone)  # cancelled only after the last rollback
            return p
        assert p["status"] == "cancelling", p
        return None

    done = wait_until(settled, f"pipeline {pid} cancelled", timeout=120)
    steps = done["steps"]
    a, b, c = (s["task"] for s in steps)
    assert c == c_task
    assert deployment.pipeline_ledger(pid) == [
        ("run", "a", a),
        ("run", "b", b),
        ("undo", "c", c),  # its own cancel ran its rollback
        ("undo", "b", steps[1]["rollback_task"]),
        ("undo", "a", steps[0]["rollback_task"]),
    ]
    assert [s["status"] for s in steps] == ["succeeded", "succeeded", "cancelled"], steps
    undone = [at(s["rolled_back_at"]) for s in steps]
    assert undone[2] <= undone[1] <= undone[0], steps
    history = pipeline_history(pipes, pid)
    assert moves(history)[-2:] == ["cancelling", "cancelled"], history
    assert history[-2]["actor"] == f"user:{done['owner']}", history
    assert max(undone) <= at(history[-1]["at"]), (steps, history)
    for s in steps[:2]:
        undo = get_task(pipes, s["rollback_task"])
        assert (undo["type"], undo["queue"], undo["status"]) == (STEP, "default", "cancelled")
        assert at(undo["finished_at"]) <= at(history[-1]["at"]), (undo, history)
    assert_error(pipes.post(f"/pipelines/{pid}/resume", json={}), 409, "illegal_transition")


def test_a_step_whose_worker_dies_is_recovered_and_each_step_runs_once(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    """A worker SIGKILLed mid-step (embedded: the server itself, then started again):
    the step is run again after its lease expires (3 s on Celery; at once when the
    embedded server starts) and the pipeline goes on, each step started once."""
    body = doc([step("a", 1), step("b", 2, ticks=300, tick_ms=20), step("c", 3)])
    pid = submit_pipeline(pipes, body)["id"]
    b_task = step_task(pipes, pid, 1)
    wait_progress(pipes, b_task, 10, timeout=60)
    runner = claimed_by(pipes, b_task)[-1]
    if deployment.workers:
        victim = next(w for w in deployment.workers if w.worker_id == runner)
        victim.kill()
        try:
            done = wait_pipeline(pipes, pid)
        finally:
            victim.start()
            wait_until(victim.ready, f"{victim.home.name} ready again", timeout=60)
    else:
        server = deployment.server
        server.kill()
        server.start()
        pipes.base_url = httpx.URL(f"{server.url}/api/v1/")
        done = wait_pipeline(pipes, pid)

    assert done["status"] == "succeeded", done
    steps = done["steps"]
    assert deployment.pipeline_ledger(pid) == [
        ("run", s["context"]["label"], s["task"]) for s in steps
    ]
    assert sorted(task_ids(pipes, type=STEP)) == sorted(s["task"] for s in steps)  # one each
    b = get_task(pipes, b_task)
    assert (b["attempts"], b["recoveries"]) == (1, 1), b  # a lost worker uses no attempt
    assert statuses(task_history(pipes, b_task)) == [
        "queued",
        "running",
        "queued",
        "running",
        "succeeded",
    ]
    again = claimed_by(pipes, b_task)
    assert again[0] == runner and again[1] != runner, again
    for s in (steps[0], steps[2]):
        assert statuses(task_history(pipes, s["task"])) == ["queued", "running", "succeeded"]


def test_a_failed_step_is_retried_from_where_it_failed(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    body = doc([step("a", 1), step("b", 2, fail_once=True), step("c", 3)])
    pid = submit_pipeline(pipes, body)["id"]
    failed = wait_pipeline(pipes, pid)
    assert failed["status"] == "failed", failed
    assert "transformers_list[1]" in failed["error"], failed  # names the step
    assert "step b fails once" in failed["error"], failed
    assert [s["status"] for s in failed["steps"]] == ["succeeded", "failed", "skipped"], failed
    a_task, b_failed = failed["steps"][0]["task"], failed["steps"][1]["task"]
    assert ledger_of(deployment, pid) == [("run", "a"), ("fail", "b")]

    assert control(pipes, pid, "retry")["status"] in ("queued", "running")
    done = wait_pipeline(pipes, pid)
    assert done["status"] == "succeeded", done
    steps = done["steps"]
    assert steps[0]["task"] == a_task  # not run again
    assert steps[1]["task"] != b_failed  # a new task for the failed step
    assert get_task(pipes, b_failed)["status"] == "failed"
    assert ledger_of(deployment, pid) == [("run", "a"), ("fail", "b"), ("run", "b"), ("run", "c")]
    assert Counter(task_ids(pipes, type=STEP)) == Counter(
        [a_task, b_failed, *(s["task"] for s in steps[1:])]
    )
    a = {"label": "a", "input": None}
    assert done["result"] == {"label": "c", "input": {"label": "b", "input": a}}
    assert "failed" in moves(pipeline_history(pipes, pid))
    err = assert_error(pipes.post(f"/pipelines/{pid}/retry", json={}), 409, "illegal_transition")
    assert err["status"] == "succeeded", err


def test_the_seed_payload_is_accepted_as_it_is_and_runs(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    r = pipes.post("/pipelines", json=SEED)
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["name"], created["project"], created["data_url"]) == (
        "sentinel_pipeline",
        "ids-drr",
        "",
    )
    assert [(s["order_no"], s["name"], s["status"]) for s in created["steps"]][1:] == [
        (2, "sentinel_upload_to_s3", "pending")
    ]
    assert created["steps"][0]["name"] == "sentinel"
    assert created["steps"][0]["context"]["date_start"] == "2023-05-01"
    done = wait_pipeline(pipes, created["id"])
    assert done["status"] == "succeeded", done  # the scene, handed on by path, uploaded
    assert done["result"]["bucket"] == "tether-demo", done
    assert [k.rsplit("/", 1)[-1] for k in done["result"]["keys"]] == ["S2_2023-05-01.json"]


def test_parallel_steps_finishing_together_start_the_next_order_exactly_once(
    deployment: Deployment, pipes: httpx.Client
) -> None:
    """Eight short steps of one order finish on every worker slot at nearly the same
    moment, several pipelines at once: each pipeline's next step is created once."""
    width, rounds = 8, 5
    body = doc([*(step(f"p{i}", 1) for i in range(width)), step("join", 2, name=JOIN)])
    pids = [submit_pipeline(pipes, body)["id"] for _ in range(rounds)]
    finished = [wait_pipeline(pipes, pid) for pid in pids]
    assert [p["status"] for p in finished] == ["succeeded"] * rounds, finished

    joins = [p["steps"][width]["task"] for p in finished]
    assert sorted(task_ids(pipes, type=JOIN)) == sorted(joins)  # one per pipeline
    assert len(task_ids(pipes, type=STEP)) == width * rounds
    for p in finished:
        join = p["steps"][width]["task"]
        assert statuses(task_history(pipes, join)) == ["queued", "running", "succeeded"]
        assert p["result"]["label"] == "join", p
        assert [o["label"] for o in p["result"]["input"]] == [f"p{i}" for i in range(width)]
        assert Counter(ledger_of(deployment, p["id"])) == Counter(
            [("run", f"p{i}") for i in range(width)] + [("run", "join")]
        )
