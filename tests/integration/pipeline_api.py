"""Helpers of the pipelines API tests: documents of ``it_step`` steps, calls and
the checks their answers share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rest_framework.test import APIClient

from tests.integration import pipeline_tasks  # noqa: F401  (registers it_step)
from tether.models import Pipeline, PipelineStep, Task

API = "/api/v1"
Client = Callable[..., APIClient]


def doc(*steps: tuple[str, int, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "pipeline_name": "p",
        "project": "proj",
        "data_url": "",
        "transformers_list": [
            {"name": "it_step", "order_no": order, "context": {"label": label, **more}}
            for label, order, more in steps
        ],
        **extra,
    }


def err(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.content[:500])
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


def submit(c: APIClient, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(f"{API}/pipelines", body, format="json")
    assert r.status_code == 201, r.content
    return dict(r.json())


def show(c: APIClient, pid: int) -> dict[str, Any]:
    r = c.get(f"{API}/pipelines/{pid}")
    assert r.status_code == 200, r.content
    return dict(r.json())


def act(c: APIClient, pid: int, action: str, **body: Any) -> Any:
    return c.post(f"{API}/pipelines/{pid}/{action}", body, format="json")


def raw_post(c: APIClient, path: str, text: str, content_type: str = "application/json") -> Any:
    return c.generic("POST", f"{API}{path}", text, content_type=content_type)


def nothing_created() -> None:
    assert not Pipeline.objects.exists()
    assert not PipelineStep.objects.exists()
    assert not Task.objects.exists()
