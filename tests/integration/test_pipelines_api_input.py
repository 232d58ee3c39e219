"""Pipelines REST API: what is not a valid pipeline document or control request is
refused with 4xx, naming the field (and the bad step), and creates nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.pipeline_api import (
    API,
    Client,
    doc,
    err,
    nothing_created,
    raw_post,
    show,
    submit,
)
from tether import service
from tether.exceptions import ServiceUnavailable
from tether.models import PipelineEvent

STEP = {"name": "it_step", "order_no": 1, "context": {"label": "a"}}
SENTINEL = {"name": "sentinel", "order_no": 1, "context": {"date_start": "2023-05-01"}}
EXPORT = {"name": "export_csv", "order_no": 2, "context": {}}
IMPORT = {"name": "import_csv", "order_no": 2, "context": {"dataset": "sales"}}


def steps(*items: Any) -> dict[str, Any]:
    return {"pipeline_name": "p", "transformers_list": list(items)}


BAD = [
    (steps(), "transformers_list", None),
    ({"pipeline_name": "p"}, "transformers_list", None),
    ({"transformers_list": [STEP]}, "pipeline_name", None),
    ({**steps(STEP), "pipeline_name": "  "}, "pipeline_name", None),
    ({**steps(STEP), "extra": 1}, "extra", None),
    (steps(STEP, {**STEP, "name": "no_such_type"}), "transformers_list[1].name", 1),
    (steps({**STEP, "name": "csv_import"}), "transformers_list[0].name", 0),
    (steps({**STEP, "order_no": "1"}), "transformers_list[0].order_no", 0),
    (steps(STEP, {**STEP, "order_no": 1.5}), "transformers_list[1].order_no", 1),
    (steps({**STEP, "order_no": 1.0}), "transformers_list[0].order_no", 0),
    (steps({**STEP, "order_no": -1}), "transformers_list[0].order_no", 0),
    (steps({**STEP, "order_no": True}), "transformers_list[0].order_no", 0),
    (steps({**STEP, "order_no": None}), "transformers_list[0].order_no", 0),
    (steps({**STEP, "context": {}}), "transformers_list[0].context", 0),
    (
        steps(STEP, {**STEP, "context": {"label": "b", "ticks": "many"}}),
        "transformers_list[1].context.ticks",
        1,
    ),
    (steps({**STEP, "context": [1]}), "transformers_list[0].context", 0),
    (steps({**STEP, "queue": "no spaces"}), "transformers_list[0].queue", 0),
    (steps({**STEP, "oops": 1}), "transformers_list[0].oops", 0),
    (steps(5), "transformers_list[0]", 0),
    (steps(*[STEP] * 10_000), "transformers_list", None),
    (steps(*[STEP] * 101), "transformers_list", None),
    ({**steps(STEP), "data_url": "http://127.0.0.1/x"}, "data_url", None),
    ({**steps(STEP), "data_url": "http://10.1.2.3/x"}, "data_url", None),
    ({**steps(STEP), "data_url": "http://169.254.169.254/latest"}, "data_url", None),
    ({**steps(STEP), "data_url": "ftp://x"}, "data_url", None),
    ({**steps(STEP), "data_url": "file:///etc/passwd"}, "data_url", None),
    ({**steps(STEP), "data_url": "http://["}, "data_url", None),
    ({**steps(STEP), "data_url": "http://example.com:port/"}, "data_url", None),
    ({**steps(STEP), "data_url": 5}, "data_url", None),
    ({**steps(STEP), "pause_timeout": 0}, "pause_timeout", None),
    ({**steps(STEP), "pause_timeout": True}, "pause_timeout", None),
    # what a step's schema cannot say, its type checks on submit too
    (
        steps({**SENTINEL, "context": {"date_start": "2023-02-31"}}),
        "transformers_list[0].context.date_start",
        0,
    ),
    (
        steps(
            STEP, {**SENTINEL, "context": {"date_start": "2023-05-01", "date_end": "2023-04-30"}}
        ),
        "transformers_list[1].context.date_end",
        1,
    ),
    (
        steps({**SENTINEL, "context": {"date_start": "2023-05-01", "date_end": "2024-05-01"}}),
        "transformers_list[0].context.date_end",
        0,
    ),
    (
        steps(STEP, {**EXPORT, "context": {"from_date": "2024-13-45"}}),
        "transformers_list[1].context.from_date",
        1,
    ),
    (
        steps(STEP, {**EXPORT, "context": {"from_date": "2024-02-01", "to_date": "2024-01-31"}}),
        "transformers_list[1].context.to_date",
        1,
    ),
    (
        steps(STEP, {**IMPORT, "context": {"dataset": "import"}}),
        "transformers_list[1].context.dataset",
        1,
    ),
    (
        steps(STEP, {**IMPORT, "context": {"dataset": "d", "delimiter": '"'}}),
        "transformers_list[1].context.delimiter",
        1,
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "step"), BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_is_400_naming_the_field_and_creates_nothing(
    client_for: Client, monkeypatch: pytest.MonkeyPatch, body: Any, field: str, step: int | None
) -> None:
    monkeypatch.delenv("TETHER_FETCH_ALLOW_PRIVATE", raising=False)
    c = client_for("alice")
    e = err(c.post(f"{API}/pipelines", body, format="json"), 400)
    assert e["code"] == "invalid_params", e
    assert e["field"] == field, e
    assert e.get("step") == step, e
    nothing_created()


def test_a_steps_own_check_names_it_and_the_field(client_for: Client) -> None:
    c = client_for("alice")
    bad = {**SENTINEL, "context": {"date_start": "2023-05-01", "date_end": "2023-04-01"}}
    e = err(c.post(f"{API}/pipelines", steps(STEP, bad), format="json"), 400)
    assert e["message"].startswith("transformers_list[1] (sentinel): params.date_end: "), e
    # the same check on POST /api/v1/tasks: a step type is an ordinary task type
    r = c.post(f"{API}/tasks", {"type": "sentinel", "params": bad["context"]}, format="json")
    e = err(r, 400)
    assert e["code"] == "invalid_params" and e["field"] == "date_end", e
    r = c.post(
        f"{API}/tasks", {"type": "export_csv", "params": {"to_date": "2024-02-30"}}, format="json"
    )
    assert err(r, 400)["field"] == "to_date"
    nothing_created()


DUPLICATES = [
    '{"pipeline_name": "p", "pipeline_name": "q", "transformers_list": [%s]}',
    '{"pipeline_name": "p", "transformers_list": [%s], "transformers_list": []}',
    '{"pipeline_name": "p", "transformers_list": [{"name": "it_step", "order_no": 1, '
    '"order_no": 2, "context": {"label": "a"}}, %s]}',
    '{"pipeline_name": "p", "transformers_list": [{"name": "it_step", "order_no": 1, '
    '"context": {"label": "a", "label": "b"}}, %s]}',
]


@pytest.mark.parametrize("text", DUPLICATES)
def test_a_key_given_twice_is_refused(client_for: Client, text: str) -> None:
    c = client_for("alice")
    e = err(raw_post(c, "/pipelines", text % json.dumps(STEP)), 400)
    assert e["code"] == "duplicate_key" and "twice" in e["message"], e
    nothing_created()


@pytest.mark.parametrize(
    ("text", "content_type", "status"),
    [
        ("[]", "application/json", 400),
        ("5", "application/json", 400),
        ("{", "application/json", 400),
        ("", "application/json", 400),
        ('{"pipeline_name": NaN}', "application/json", 400),
        ("pipeline_name=p", "application/x-www-form-urlencoded", 415),
    ],
)
def test_a_body_that_is_no_document_is_refused(
    client_for: Client, text: str, content_type: str, status: int
) -> None:
    c = client_for("alice")
    err(raw_post(c, "/pipelines", text, content_type), status)
    nothing_created()


def test_broker_down_is_503_and_creates_nothing(client_for: Client) -> None:
    def broker_down() -> None:
        raise ServiceUnavailable()

    c = client_for("alice")
    service.add_admission_check(broker_down)
    try:
        e = err(c.post(f"{API}/pipelines", doc(("a", 1, {})), format="json"), 503)
    finally:
        service.remove_admission_check(broker_down)
    assert e["code"] == "broker_unavailable"
    nothing_created()


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "5",
        '"x"',
        '{"reason": 5}',
        json.dumps({"reason": "x" * 501}),
        '{"reason": "a", "reason": "b"}',
    ],
)
def test_a_control_body_must_be_an_object_with_a_text_reason(client_for: Client, text: str) -> None:
    c = client_for("alice")
    pid = submit(c, doc(("a", 1, {})))["id"]
    assert err(raw_post(c, f"/pipelines/{pid}/pause", text), 400)
    assert show(c, pid)["status"] == "queued"
    assert list(PipelineEvent.objects.values_list("to_status", flat=True)) == ["queued"]
