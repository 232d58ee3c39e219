"""A pipeline as the CLI shows it: ``PipelineView`` keeps the API's pipeline JSON up to
date from stream events, and the pure functions here say how a pipeline and its steps
read in a line, a table or a bar label."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tether.cli.term import clip

FINAL = ("succeeded", "failed", "cancelled")
# an undo task is created queued, moved to cancelling while its rollback runs, and
# cancelled once the rollback is done
UNDO_STATUS = {
    "queued": "rolling back",
    "cancelling": "rolling back",
    "running": "rolling back",
    "cancelled": "rolled back",
    "failed": "rollback failed",
}


def step_labels(steps: list[dict[str, Any]]) -> dict[int, str]:
    """``order/name`` of each step by its index; ``order/name#index`` when steps of
    one order share a name (parallel steps of one type)."""
    counts = Counter((s["order_no"], s["name"]) for s in steps)
    return {
        s["index"]: f"{s['order_no']}/{s['name']}"
        + (f"#{s['index']}" if counts[(s["order_no"], s["name"])] > 1 else "")
        for s in steps
    }


def step_status(step: dict[str, Any], undo_status: str | None = None) -> str:
    """The step's status, or where its rollback is once the pipeline undoes it."""
    if step.get("rolled_back_at"):
        return "rolled back"
    if undo_status in UNDO_STATUS:
        return UNDO_STATUS[undo_status]
    return str(step.get("status") or "pending")


def percent(step: dict[str, Any]) -> float | None:
    """The step's progress in percent (100 once it succeeded), None when unknown."""
    if step.get("status") == "succeeded":
        return 100.0
    pct = (step.get("progress") or {}).get("percent")
    return float(pct) if isinstance(pct, int | float) else None


def percent_text(step: dict[str, Any]) -> str:
    pct = percent(step)
    return "-" if pct is None or step.get("status") in ("pending", "skipped") else f"{pct:.0f}%"


def step_line(label: str, step: dict[str, Any], status: str) -> str:
    """A step in one line, for output that is not a terminal."""
    task = f" (task {step['task']})" if step.get("task") is not None else ""
    pct = percent(step)
    extra = f" {pct:.0f}%" if pct is not None and status in ("running", "pausing", "paused") else ""
    return f"step {label}{task}: {status}{extra}"


def final_line(pipeline: dict[str, Any], width: int | None = None) -> str:
    """``pipeline 7 (name): status``, with its error or (clipped to ``width`` on a
    terminal) its result."""
    line = f"pipeline {pipeline['id']} ({pipeline.get('name')}): {pipeline['status']}"
    if pipeline.get("error"):
        line += f": {pipeline['error']}"
    elif pipeline["status"] == "succeeded" and pipeline.get("result") is not None:
        line += f" {clip(json.dumps(pipeline['result']), width)}"
    return line


def steps_summary(pipeline: dict[str, Any]) -> str:
    """``2/3 succeeded`` (or ``-`` when the answer has no steps)."""
    steps = pipeline.get("steps")
    if not isinstance(steps, list) or not steps:
        return "-"
    done = sum(1 for s in steps if s.get("status") == "succeeded")
    return f"{done}/{len(steps)} succeeded"


class PipelineView:
    """``pipeline`` (the API's JSON) kept up to date from the events of a
    subscription to it: status and progress events of its step tasks, the status
    events of its undo tasks, and the pipeline's own events. ``apply`` says when the
    pipeline must be read again: a task it does not know yet (the next order's steps,
    an undo task), a move that does not start from the status shown (an event
    published before the last read, or after a reconnection that lost the pipeline's
    own events), and the end (for its error and result)."""

    def __init__(self, pipeline: dict[str, Any]) -> None:
        self.pipeline = pipeline
        self.undo: dict[int, str] = {}  # undo task id -> its status
        self.reason = ""  # of the pipeline's last move seen on the stream
        self._unexplained: set[int] = set()  # tasks a fresh read did not name

    @property
    def id(self) -> int:
        return int(self.pipeline["id"])

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.pipeline.get("steps") or [])

    @property
    def done(self) -> bool:
        return self.pipeline["status"] in FINAL

    def reset(self, pipeline: dict[str, Any]) -> None:
        """A fresh read of the pipeline."""
        self.pipeline = pipeline

    def status_of(self, step: dict[str, Any]) -> str:
        undo = step.get("rollback_task")
        return step_status(step, self.undo.get(undo) if isinstance(undo, int) else None)

    def _find(self, task_id: int) -> tuple[dict[str, Any], bool] | None:
        """(step, whether ``task_id`` is its undo task)."""
        for step in self.steps:
            if step.get("task") == task_id:
                return step, False
            if step.get("rollback_task") == task_id:
                return step, True
        return None

    def apply(self, event: dict[str, Any]) -> bool:
        """Apply an event; True when the pipeline must be read again."""
        if event.get("kind") == "pipeline":
            if event.get("pipeline") != self.id:
                return False
            if event.get("from") != self.pipeline["status"]:
                return True  # already read (it came before the read), or one was missed
            self.pipeline["status"] = event.get("to")
            self.reason = str(event.get("reason") or "")
            tasks = event.get("tasks") or []
            return self.done or any(self._find(t) is None for t in tasks if isinstance(t, int))
        task_id = event.get("task")
        if not isinstance(task_id, int):
            return False
        found = self._find(task_id)
        if found is None:
            # a task of this pipeline created after it was read; once only, so that a
            # task the pipeline does not name (another subscription's) costs one read
            if event.get("kind") != "status" or event.get("pipeline", self.id) != self.id:
                return False
            if task_id in self._unexplained:
                return False
            self._unexplained.add(task_id)
            return True
        step, undo = found
        if event.get("kind") == "progress":
            if not undo:
                step["progress"] = event.get("progress")
            return False
        if event.get("kind") != "status":
            return False
        to = str(event.get("to"))
        if undo:
            self.undo[task_id] = to
            if to == "cancelled":
                step["rolled_back_at"] = event.get("at") or True
            return False
        if event.get("from") != step["status"]:
            return True  # already read (it came before the read), or one was missed
        step["status"] = to
        if to != "running" and isinstance(step.get("progress"), dict):
            # as the API shows it: no time left is counting down unless it runs
            step["progress"] = {**step["progress"], "eta_seconds": None}
        return False
