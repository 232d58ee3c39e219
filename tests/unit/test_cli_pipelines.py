"""How the CLI shows pipelines (pure functions) and keeps a watched pipeline up to date
from stream events (``PipelineView``, no server)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from tether.cli import pipelines as p
from tether.cli.connection import EXIT_USAGE, CliError
from tether.cli.pipeline_view import (
    PipelineView,
    final_line,
    percent_text,
    step_labels,
    step_line,
    steps_summary,
)
from tether.cli.term import UNWRAPPED
from tether.client import BadRequest, Conflict


def step(index: int, order_no: int, name: str = "ledger", **kw: Any) -> dict[str, Any]:
    base = {
        "index": index,
        "order_no": order_no,
        "name": name,
        "task": None,
        "status": "pending",
        "progress": None,
        "rolled_back_at": None,
        "rollback_task": None,
    }
    return {**base, **kw}


def pipeline(*steps: dict[str, Any], **kw: Any) -> dict[str, Any]:
    base = {"id": 7, "name": "sentinel_pipeline", "project": "ids-drr", "status": "running"}
    return {**base, "current_order": 1, "error": "", "result": None, "steps": list(steps), **kw}


def test_labels_statuses_and_lines() -> None:
    steps = [step(0, 1, "fetch"), step(1, 2, "csv"), step(2, 2, "csv"), step(3, 3, "csv")]
    assert step_labels(steps) == {0: "1/fetch", 1: "2/csv#1", 2: "2/csv#2", 3: "3/csv"}
    running = step(0, 1, task=41, status="running", progress={"percent": 42.4})
    assert step_line("1/fetch", running, "running") == "step 1/fetch (task 41): running 42%"
    assert step_line("2/csv", step(1, 2), "pending") == "step 2/csv: pending"
    done = step(0, 1, task=41, status="succeeded", progress={"percent": 80})
    assert percent_text(done) == "100%" and percent_text(step(1, 2)) == "-"
    assert step_line("1/fetch", done, "succeeded") == "step 1/fetch (task 41): succeeded"
    assert steps_summary(pipeline(done, step(1, 2))) == "1/2 succeeded"
    assert steps_summary({"id": 1, "status": "queued"}) == "-"

    failed = pipeline(status="failed", error="step 2/csv failed: boom")
    assert final_line(failed) == "pipeline 7 (sentinel_pipeline): failed: step 2/csv failed: boom"
    ok = pipeline(status="succeeded", result={"rows": "x" * 200})
    assert final_line(ok).endswith('"}') and "…" not in final_line(ok)
    assert final_line(ok, 40).endswith("…")  # on a terminal the result is cut


def test_view_follows_steps_orders_and_the_end() -> None:
    view = PipelineView(pipeline(step(0, 1, task=41, status="queued"), step(1, 2)))

    def moved(task: int, src: str | None, dst: str, pipeline_id: int = 7) -> dict[str, Any]:
        return {"kind": "status", "task": task, "from": src, "to": dst, "pipeline": pipeline_id}

    assert not view.apply(moved(41, "queued", "running"))
    assert view.status_of(view.steps[0]) == "running"
    progress = {"done": 3, "total": 10, "percent": 30.0, "eta_seconds": 2}
    assert not view.apply({"kind": "progress", "task": 41, "progress": progress})
    assert view.steps[0]["progress"] == progress
    assert not view.apply(moved(41, "running", "paused"))
    assert view.steps[0]["progress"]["eta_seconds"] is None  # not counting down
    # published before the pipeline was read, or one missed: read it again
    assert view.apply(moved(41, "running", "paused"))
    # the next order's task is not in the pipeline as read: read it again, once
    assert view.apply(moved(42, "queued", "running"))
    assert not view.apply(moved(42, "queued", "running"))
    assert not view.apply(moved(99, None, "queued", pipeline_id=8))
    assert not view.apply({"kind": "progress", "task": 43, "progress": {}})
    # the pipeline's own moves; the end is read again (for its error or result)
    paused = {"kind": "pipeline", "pipeline": 7, "from": "running", "to": "paused"}
    assert not view.apply({**paused, "reason": "why"})
    assert view.pipeline["status"] == "paused" and view.reason == "why" and not view.done
    assert view.apply(paused)  # not from the status shown: read it again
    assert not view.apply({**paused, "pipeline": 8})
    assert view.apply({"kind": "pipeline", "pipeline": 7, "from": "paused", "to": "succeeded"})
    assert view.done


def test_view_shows_rollbacks() -> None:
    view = PipelineView(
        pipeline(
            step(0, 1, task=41, status="succeeded", rollback_task=50),
            step(1, 2, task=42, status="succeeded"),
            status="cancelling",
        )
    )
    first, second = view.steps
    assert not view.apply({"kind": "status", "task": 50, "from": "queued", "to": "cancelling"})
    assert view.status_of(first) == "rolling back" and view.status_of(second) == "succeeded"
    assert not view.apply({"kind": "progress", "task": 50, "progress": {"percent": 5}})
    assert first["progress"] is None  # an undo task's figures are not the step's
    view.apply({"kind": "status", "task": 50, "to": "cancelled", "at": "2026-01-01T00:00:00Z"})
    assert view.status_of(first) == "rolled back" and first["status"] == "succeeded"


def render(table: Any, terminal: bool = False) -> str:
    buf = io.StringIO()
    width = 100 if terminal else UNWRAPPED
    con = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    con.print(table)
    return buf.getvalue()


def test_tables() -> None:
    shown = pipeline(
        step(0, 1, "fetch", task=41, status="succeeded", rolled_back_at="2026-01-01T00:00:00Z"),
        step(1, 2, "csv", task=42, status="running", progress={"percent": 12.5}),
        step(2, 3, "csv"),
    )
    con = Console(file=io.StringIO(), width=UNWRAPPED)
    text = render(p.steps_table(shown, con))
    lines = [line.replace("┃", "│").split("│") for line in text.splitlines()]
    cells = [[c.strip() for c in line[1:-1]] for line in lines if len(line) > 1]
    assert cells[0] == ["#", "order", "name", "task", "status", "progress", "rolled back"]
    assert cells[1][:6] == ["0", "1", "fetch", "41", "succeeded", "100%"]
    assert cells[1][6] != "-"  # its local time
    assert cells[2] == ["1", "2", "csv", "42", "running", "12%", "-"]
    assert cells[3] == ["2", "3", "csv", "-", "pending", "-", "-"]
    listing = render(p.pipelines_table([shown, pipeline(id=8, project="", error="a\nb")], con))
    assert "│ 7  │ sentinel_pipeline │ ids-drr │ running │ 1     │ 1/3 succeeded" in listing
    assert "│ 8  │" in listing and "│ a " in listing and "b" not in listing.split("│ a ")[1]
    keys = dict(p.header_rows(pipeline(result={"n": 1}, started_at="2026-01-01T00:00:00Z")))
    assert keys["status"] == "running" and keys["result"] == '{"n": 1}' and "started" in keys


def test_document_file(tmp_path: Path) -> None:
    good = tmp_path / "p.json"
    doc = {"pipeline_name": "x", "transformers_list": [{"name": "add", "order_no": 1}]}
    good.write_text(json.dumps(doc))
    assert p.load_document(str(good)) == doc
    cases = {
        "missing.json": "cannot read pipeline file",
        "bad.json": "is not valid JSON",
        "list.json": "must hold a JSON object",
        "twice.json": "duplicate key 'project'",
    }
    (tmp_path / "bad.json").write_text('{"pipeline_name": ')
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "twice.json").write_text('{"project": "a", "project": "b"}')
    for name, message in cases.items():
        with pytest.raises(CliError) as caught:
            p.load_document(str(tmp_path / name))
        assert message in caught.value.message and caught.value.code == EXIT_USAGE
        assert "\n" not in caught.value.message


def test_refusals_name_the_field_and_the_status() -> None:
    field = "transformers_list[1].context.date_start"
    named = BadRequest(f"{field}: not a date", code="invalid_params", body={"field": field})
    assert p.refusal(named) == f"{field}: not a date"
    unnamed = BadRequest("pipeline_name is required", body={"field": "pipeline_name"})
    assert p.refusal(unnamed) == "pipeline_name is required"
    other = BadRequest("it is bad", body={"field": "data_url"})
    assert p.refusal(other) == "it is bad (field data_url)"
    conflict = Conflict("cannot pause a pipeline that is paused", body={"status": "paused"})
    assert p.control_refusal(7, conflict).message == (
        "pipeline 7: cannot pause a pipeline that is paused"
    )
    terse = Conflict("not now", body={"status": "succeeded"})
    assert p.control_refusal(7, terse).message == "pipeline 7: not now (it is succeeded)"
