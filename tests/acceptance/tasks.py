"""Test-only task types, loaded by the server under test via TETHER_TASK_MODULES.

``ledger`` writes one row per step into ``acc_ledger`` inside ``ctx.atomic``; its
rollback deletes the task's rows (``ledger_durable``: the same, with 20 attempts, so it
survives many worker kills). With ``hold_rollback`` the rollback first waits while
the file ``$TETHER_HOME/hold-rollback`` exists, so a test can keep a task in
``cancelling`` for as long as it needs (e.g. across a server kill). While it waits it
reports progress (a control point) unless ``rollback_progress`` is false; then it only
watches for a server shutdown.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from tests.acceptance import pipeline_steps  # noqa: F401  (registers the pipeline step types)
from tether import task
from tether.context import TaskContext
from tether.exceptions import ShutdownSignal
from tether.models import Task

CREATE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS acc_ledger (task_id INTEGER, step INTEGER, UNIQUE(task_id, step))"
)
HOLD_ROLLBACK_FILE = "hold-rollback"
MAX_HOLD_SECONDS = 120.0


def _ensure_table() -> None:
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "postgresql":  # concurrent CREATE … IF NOT EXISTS can
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('acc_ledger'))")  # clash
        cur.execute(CREATE_LEDGER)


def _undo_ledger(ctx: TaskContext) -> None:
    params = Task.objects.filter(id=ctx.task_id).values_list("params", flat=True).first()
    params = params or {}
    if params.get("hold_rollback"):
        gate = Path(settings.TETHER_HOME) / HOLD_ROLLBACK_FILE
        deadline = time.monotonic() + MAX_HOLD_SECONDS
        while gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
            if params.get("rollback_progress", True):
                ctx.progress(0, message="rollback waiting for the test")  # control point
            elif ctx.stop_requested == "shutdown":
                raise ShutdownSignal()
    _ensure_table()
    with connection.cursor() as cur:
        cur.execute("DELETE FROM acc_ledger WHERE task_id = %s", [ctx.task_id])


LEDGER_PARAMS = {
    "type": "object",
    "properties": {
        "steps": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "step_ms": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 5},
        "hold_rollback": {"type": "boolean", "default": False},
        "rollback_progress": {"type": "boolean", "default": True},
    },
    "required": ["steps"],
    "additionalProperties": False,
}


@task(name="ledger", rollback=_undo_ledger, params=LEDGER_PARAMS)
def ledger(
    ctx: TaskContext,
    *,
    steps: int,
    step_ms: int = 5,
    hold_rollback: bool = False,
    rollback_progress: bool = True,
) -> dict[str, Any]:
    """Write one acc_ledger row per step, each in one transaction with its checkpoint."""
    _ensure_table()
    start = int(ctx.state.get("step", 0))
    for i in range(start, steps):
        if step_ms:
            time.sleep(step_ms / 1000)
        with ctx.atomic({"step": i + 1}), connection.cursor() as cur:
            cur.execute(
                "INSERT INTO acc_ledger (task_id, step) VALUES (%s, %s)", [ctx.task_id, i + 1]
            )
        ctx.progress(i + 1, total=steps, unit="rows")
    return {"steps": steps, "started_from": start, "attempt": ctx.attempt}


# the same task with room for many worker losses, run again at once after each one
task(
    name="ledger_durable",
    rollback=_undo_ledger,
    params=LEDGER_PARAMS,
    max_recoveries=20,
    recovery_backoff=0,
)(ledger)


@task(
    name="flaky",
    retry_backoff=0.1,
    max_attempts=3,
    params={
        "type": "object",
        "properties": {
            "fail_times": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1}
        },
        "additionalProperties": False,
    },
)
def flaky(ctx: TaskContext, *, fail_times: int = 1) -> dict[str, Any]:
    """Raise on the first ``fail_times`` attempts, then succeed."""
    ctx.progress(0, total=1, unit="tries")
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"flaky failure on attempt {ctx.attempt}")
    ctx.progress(1, total=1, unit="tries")
    return {"attempt": ctx.attempt}


@task(name="always_fails", retry_backoff=0.1, max_attempts=2)
def always_fails(ctx: TaskContext) -> None:
    """Raise every time."""
    ctx.progress(0, total=1, unit="tries")
    raise ValueError(f"always fails (attempt {ctx.attempt})")


@task(
    name="stubborn",
    rollback=_undo_ledger,
    params={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 600, "default": 600}},
        "additionalProperties": False,
    },
)
def stubborn(ctx: TaskContext, *, seconds: float = 600) -> None:
    """Write ledger step 1, then compute for ``seconds`` without any control point: only
    hard termination stops it."""
    _ensure_table()
    with ctx.atomic({"step": 1}), connection.cursor() as cur:
        cur.execute("INSERT INTO acc_ledger (task_id, step) VALUES (%s, 1)", [ctx.task_id])
    ctx.progress(1, total=2, unit="steps")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))


@task(
    name="not_json",
    params={
        "type": "object",
        "properties": {"value": {"type": "string", "enum": ["inf", "-inf", "nan"]}},
        "additionalProperties": False,
    },
)
def not_json(ctx: TaskContext, *, value: str = "inf") -> dict[str, Any]:
    """Return a float JSON cannot hold: the task fails with result_not_json."""
    return {"sum": float(value)}


@task(
    name="chatty",
    params={
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 10_000, "default": 50},
            "size": {"type": "integer", "minimum": 0, "maximum": 1_000_000, "default": 0},
        },
        "additionalProperties": False,
    },
)
def chatty(ctx: TaskContext, *, steps: int = 50, size: int = 0) -> None:
    """Report progress with a ``size``-character message at each of ``steps`` steps,
    one published progress update per step (they go out at most every 0.2 s): event
    streams carry megabytes."""
    for i in range(steps):
        ctx.progress(i + 1, total=steps, unit="steps", message=f"{i:08d}" + "x" * size)
        time.sleep(0.21)


HOLD_STEP_FILE = "hold-step"


@task(
    name="gated_step",
    params={
        "type": "object",
        "properties": {"label": {"type": "string", "maxLength": 100, "default": ""}},
        "additionalProperties": False,
    },
)
def gated_step(ctx: TaskContext, *, label: str = "") -> dict[str, Any]:
    """Wait while the file ``$TETHER_HOME/hold-step`` exists (reporting progress, a
    control point), then return its label with its input: a test holds a pipeline's
    step running for as long as it needs."""
    gate = Path(settings.TETHER_HOME) / HOLD_STEP_FILE
    deadline = time.monotonic() + MAX_HOLD_SECONDS
    while gate.exists() and time.monotonic() < deadline:
        ctx.progress(0, total=1, unit="steps", message="held by the test")
        time.sleep(0.05)
    ctx.progress(1, total=1, unit="steps")
    return {"label": label, "input": ctx.input}
