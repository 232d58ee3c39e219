"""Task types used by the in-process integration tests."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.db import connection

from tether import task
from tether.context import TaskContext

GATES: dict[str, threading.Event] = {}
LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS it_ledger (task_id INTEGER, step INTEGER, UNIQUE(task_id, step))"
)


def ledger_rows(task_id: int) -> list[int]:
    with connection.cursor() as cur:
        cur.execute(LEDGER_DDL)
        cur.execute("SELECT step FROM it_ledger WHERE task_id = %s ORDER BY step", [task_id])
        return [r[0] for r in cur.fetchall()]


def _undo_ledger(ctx: TaskContext) -> None:
    with connection.cursor() as cur:
        cur.execute("DELETE FROM it_ledger WHERE task_id = %s", [ctx.task_id])


@task(name="it_ledger", rollback=_undo_ledger, params={"type": "object"})
def it_ledger(ctx: TaskContext, *, steps: int = 50, step_ms: float = 5) -> dict[str, Any]:
    with connection.cursor() as cur:
        cur.execute(LEDGER_DDL)
    for i in range(ctx.state.get("step", 0), steps):
        time.sleep(step_ms / 1000)
        with ctx.atomic({"step": i + 1}), connection.cursor() as cur:
            cur.execute(
                "INSERT INTO it_ledger (task_id, step) VALUES (%s, %s)", [ctx.task_id, i + 1]
            )
        ctx.progress(i + 1, total=steps)
    return {"rows": steps}


@task(name="it_flaky", max_attempts=3, retry_backoff=0.05, params={"type": "object"})
def it_flaky(ctx: TaskContext, *, fail_times: int = 1) -> dict[str, Any]:
    if ctx.attempt <= fail_times:
        raise ValueError(f"flaky failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@task(name="it_gate", params={"type": "object"})
def it_gate(ctx: TaskContext, *, gate: str) -> str:
    """Blocks (checking for control requests) until the named gate opens."""
    while not GATES.setdefault(gate, threading.Event()).wait(0.005):
        ctx.progress(0)
    return gate


def _bad_rollback(ctx: TaskContext) -> None:
    raise OSError("disk on fire")


@task(name="it_bad_rollback", rollback=_bad_rollback, params={"type": "object"})
def it_bad_rollback(ctx: TaskContext) -> None:
    ctx.checkpoint({"started": True})
    while True:
        time.sleep(0.005)
        ctx.progress(1)


STUCK: dict[int, threading.Event] = {}  # task id -> set when its stuck call returns
RELEASE: dict[int, threading.Event] = {}  # task id -> set by the test to end the stuck call


def _undo_stubborn(ctx: TaskContext) -> None:
    with connection.cursor() as cur:
        cur.execute(LEDGER_DDL)
        cur.execute("DELETE FROM it_ledger WHERE task_id = %s", [ctx.task_id])


@task(name="it_stubborn", rollback=_undo_stubborn, params={"type": "object"})
def it_stubborn(ctx: TaskContext, *, block_seconds: float = 0) -> None:
    """Writes one ledger row, then ignores control requests: a pure-Python busy loop,
    or (``block_seconds``) one long blocking call, like a stuck socket read, that the
    test can end early through ``RELEASE``."""
    with ctx.atomic({"step": 1}), connection.cursor() as cur:
        cur.execute(LEDGER_DDL)
        cur.execute("INSERT INTO it_ledger (task_id, step) VALUES (%s, 1)", [ctx.task_id])
    ctx.progress(1)
    if block_seconds:
        try:
            RELEASE.setdefault(ctx.task_id, threading.Event()).wait(block_seconds)
            ctx.checkpoint({"step": 2})  # would be fenced off: a new owner rolled back
        finally:
            STUCK.setdefault(ctx.task_id, threading.Event()).set()
    while True:
        sum(range(1000))


@task(name="it_not_json", params={"type": "object"})
def it_not_json(ctx: TaskContext, *, value: str = "inf", where: str = "result") -> Any:
    """Puts ``float(value)`` ("inf", "-inf", "nan": not JSON) in its result, or in its
    checkpoint or progress when ``where`` says so."""
    bad = float(value)
    if where == "checkpoint":
        ctx.checkpoint({"rows": [1, 2, 3, bad]})
    elif where == "progress":
        ctx.progress(bad, total=10)
    return {"sum": bad}


@task(name="it_bad_text", max_attempts=1, params={"type": "object"})
def it_bad_text(ctx: TaskContext) -> None:
    """Raises an error whose message holds a NUL and a lone surrogate."""
    raise ValueError("bad\x00byte \ud800")
