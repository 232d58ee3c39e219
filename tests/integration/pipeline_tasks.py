"""Step types for the pipeline tests: each records its runs and rollbacks in a ledger
table, so a test can prove what ran, in which order, and only once."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection

from tether import task
from tether.context import TaskContext

LEDGER_DDL = (
    "CREATE TABLE IF NOT EXISTS it_pipeline_ledger "
    "(id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER, what VARCHAR(40))"
)
LEDGER_DDL_SERVER = (
    "CREATE TABLE IF NOT EXISTS it_pipeline_ledger "
    "(id BIGINT PRIMARY KEY {auto}, task_id INTEGER, what VARCHAR(40))"
)
STEP_PARAMS = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "ticks": {"type": "integer", "minimum": 0, "default": 0},
        "tick_ms": {"type": "integer", "minimum": 0, "default": 10},
        "fail": {"type": "boolean", "default": False},
    },
    "required": ["label"],
    "additionalProperties": False,
}


def ensure_ledger() -> None:
    with connection.cursor() as cur:
        if connection.vendor == "sqlite":
            cur.execute(LEDGER_DDL)
        else:
            auto = (
                "GENERATED ALWAYS AS IDENTITY"
                if connection.vendor == "postgresql"
                else "AUTO_INCREMENT"
            )
            cur.execute(LEDGER_DDL_SERVER.format(auto=auto))


def clear_ledger() -> None:
    ensure_ledger()
    with connection.cursor() as cur:
        cur.execute("DELETE FROM it_pipeline_ledger")


def ledger() -> list[str]:
    """Every entry, in the order written: "run:<label>" or "undo:<label>"."""
    ensure_ledger()
    with connection.cursor() as cur:
        cur.execute("SELECT what FROM it_pipeline_ledger ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def _write(what: str, task_id: int) -> None:
    ensure_ledger()
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO it_pipeline_ledger (task_id, what) VALUES (%s, %s)", [task_id, what]
        )


def _undo(ctx: TaskContext) -> None:
    label = ctx.state.get("label", "?")
    with ctx.atomic(dict(ctx.state, undone=True)):
        if not ctx.state.get("undone"):
            _write(f"undo:{label}", ctx.task_id)


@task(name="it_step", rollback=_undo, params=STEP_PARAMS, max_attempts=1)
def it_step(
    ctx: TaskContext, *, label: str, ticks: int = 0, tick_ms: int = 10, fail: bool = False
) -> dict[str, Any]:
    """Ticks (pausable), then records its run and returns its label with its input."""
    for i in range(ctx.state.get("tick", 0), ticks):
        time.sleep(tick_ms / 1000)
        ctx.checkpoint({"tick": i + 1, "label": label}, sync=False)
        ctx.progress(i + 1, total=ticks, unit="ticks")
    if fail and not ctx.state.get("healed"):
        raise RuntimeError(f"step {label} failed on purpose")
    with ctx.atomic({"tick": ticks, "label": label, "ran": True}):
        _write(f"run:{label}", ctx.task_id)
    return {"label": label, "input": ctx.input}
