"""Helpers for the pipeline conformance tests: documents in the seed's format, the
pipeline API (``/api/v1/pipelines``) and what a deployment's steps did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import events, get_task, wait_until

STEP = "pipeline_step"  # tests/acceptance/pipeline_steps.py
JOIN = "pipeline_join"  # the same, under a name of its own
PIPELINE_FINAL = ("succeeded", "failed", "cancelled")
DEADLINE = 120.0  # seconds a whole pipeline may take on a loaded 2-core machine


def step(
    label: str, order_no: int, *, name: str = STEP, queue: str | None = None, **context: Any
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": name,
        "order_no": order_no,
        "context": {"label": label, **context},
    }
    if queue is not None:
        item["queue"] = queue
    return item


def doc(steps: list[dict[str, Any]], *, data_url: str = "", name: str = "p") -> dict[str, Any]:
    return {
        "pipeline_name": name,
        "data_url": data_url,
        "project": "conformance",
        "transformers_list": steps,
    }


def submit_pipeline(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/pipelines", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def get_pipeline(client: httpx.Client, pipeline_id: int) -> dict[str, Any]:
    r = client.get(f"/pipelines/{pipeline_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def control(client: httpx.Client, pipeline_id: int, action: str) -> dict[str, Any]:
    r = client.post(f"/pipelines/{pipeline_id}/{action}", json={})
    assert r.status_code == 202, r.text
    return dict(r.json())


def wait_pipeline(
    client: httpx.Client, pipeline_id: int, *statuses: str, timeout: float = DEADLINE
) -> dict[str, Any]:
    """Poll the pipeline until its status is one of ``statuses`` (default: final)."""
    wanted = statuses or PIPELINE_FINAL
    seen: list[str] = []

    def check() -> dict[str, Any] | None:
        p = get_pipeline(client, pipeline_id)
        if not seen or seen[-1] != p["status"]:
            seen.append(p["status"])
        return p if p["status"] in wanted else None

    try:
        return dict(wait_until(check, f"pipeline {pipeline_id} {wanted}", timeout))
    except pytest.fail.Exception:  # say what it went through
        pytest.fail(
            f"pipeline {pipeline_id} not {wanted}; seen {seen}; now "
            f"{get_pipeline(client, pipeline_id)}"
        )


def step_task(client: httpx.Client, pipeline_id: int, index: int, timeout: float = 60.0) -> int:
    """The task of step ``index``, once its order has started."""
    return int(
        wait_until(
            lambda: get_pipeline(client, pipeline_id)["steps"][index]["task"],
            f"step {index} of pipeline {pipeline_id} to start",
            timeout,
        )
    )


def pipeline_history(client: httpx.Client, pipeline_id: int) -> list[dict[str, Any]]:
    r = client.get(f"/pipelines/{pipeline_id}/events", params={"page_size": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    return list(body["results"] if isinstance(body, dict) else body)


def moves(history: list[dict[str, Any]]) -> list[str]:
    return [e["to_status"] for e in history]


HANDED_BACK = "handed back"


def task_history(client: httpx.Client, task_id: int) -> list[dict[str, Any]]:
    """The task's history without the claims an executor handed back before it ran
    the task (claimed ahead, then no thread came free): those are not runs."""
    kept: list[dict[str, Any]] = []
    for e in events(client, task_id):
        if e["to_status"] == "queued" and e["reason"].startswith(HANDED_BACK):
            assert kept and kept[-1]["to_status"] == "running", (task_id, kept, e)
            kept.pop()
            continue
        kept.append(e)
    return kept


def claimed_by(client: httpx.Client, task_id: int) -> list[str]:
    """The executors that ran the task (the actor of each queued -> running move)."""
    return [
        e["actor"]
        for e in task_history(client, task_id)
        if (e["from_status"], e["to_status"]) == ("queued", "running")
    ]


def step_tasks(client: httpx.Client, pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    return [get_task(client, s["task"]) for s in pipeline["steps"]]


def at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def settle_pipelines(client: httpx.Client) -> None:
    """Cancel the user's unfinished pipelines and wait until they are final, so that
    none of their steps or rollbacks holds a slot of the next test."""
    r = client.get("/pipelines", params={"page_size": 100})
    assert r.status_code == 200, r.text
    open_ids = [p["id"] for p in r.json()["results"] if p["status"] not in PIPELINE_FINAL]
    for pipeline_id in open_ids:
        client.post(f"/pipelines/{pipeline_id}/cancel", json={})  # 409: cancelling already
    for pipeline_id in open_ids:
        wait_pipeline(client, pipeline_id, timeout=60)
