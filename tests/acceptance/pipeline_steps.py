"""Pipeline step types for tests against real deployments (registered by
``tests.acceptance.tasks``, which TETHER_TASK_MODULES loads).

``pipeline_step`` ticks (each tick a control point), then records ``run`` in the
``acc_pipeline_ledger`` table together with its checkpoint, and returns its label with
its input (and, when it went on from a checkpoint, the tick it went on from), so a
pipeline's result shows the chain of outputs handed on. Its rollback
records ``undo``. Both are recorded at most once per task, however often the task is
run again (a worker killed, a server restarted): the ledger proves what ran, in which
order, and only once. With ``fail_once`` the first task of that label in a pipeline
records ``fail`` and fails; a later task of the same step (a retry) succeeds.

``pipeline_join`` is the same type under another name, so a test can count its tasks
with ``GET /tasks?type=pipeline_join``.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import connection, transaction

from tether import task
from tether.context import TaskContext
from tether.models import Task

LEDGER_DDL = {
    "sqlite": "id INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "mysql": "id BIGINT AUTO_INCREMENT PRIMARY KEY",
}
CREATE_LEDGER = (
    "CREATE TABLE IF NOT EXISTS acc_pipeline_ledger ({id}, pipeline_id INTEGER, "
    "task_id INTEGER, label VARCHAR(100), what VARCHAR(10))"
)

STEP_PARAMS = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "minLength": 1, "maxLength": 100},
        "ticks": {"type": "integer", "minimum": 0, "maximum": 100_000, "default": 0},
        "tick_ms": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 10},
        "fail_once": {"type": "boolean", "default": False},
    },
    "required": ["label"],
    "additionalProperties": False,
}


def _ensure_table() -> None:
    with transaction.atomic(), connection.cursor() as cur:
        if connection.vendor == "postgresql":  # concurrent CREATE … IF NOT EXISTS can
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('acc_pipeline_ledger'))")  # clash
        cur.execute(CREATE_LEDGER.format(id=LEDGER_DDL[connection.vendor]))


def _pipeline_of(task_id: int) -> int | None:
    return Task.objects.filter(id=task_id).values_list("pipeline_id", flat=True).first()


def _record(task_id: int, label: str, what: str) -> None:
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO acc_pipeline_ledger (pipeline_id, task_id, label, what) "
            "VALUES (%s, %s, %s, %s)",
            [_pipeline_of(task_id), task_id, label, what],
        )


def _failed_before(task_id: int, label: str) -> bool:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT 1 FROM acc_pipeline_ledger WHERE pipeline_id = %s AND label = %s "
            "AND what = 'fail'",
            [_pipeline_of(task_id), label],
        )
        return cur.fetchone() is not None


def _undo(ctx: TaskContext) -> None:
    if ctx.state.get("undone"):
        return
    params = Task.objects.filter(id=ctx.task_id).values_list("params", flat=True).first() or {}
    _ensure_table()
    with ctx.atomic(dict(ctx.state, undone=True)):
        _record(ctx.task_id, str(params.get("label", "?")), "undo")


def pipeline_step(
    ctx: TaskContext, *, label: str, ticks: int = 0, tick_ms: int = 10, fail_once: bool = False
) -> dict[str, Any]:
    """Tick, record the run once, hand the input on with this step's label."""
    _ensure_table()
    start = int(ctx.state.get("tick", 0))
    for i in range(start, ticks):
        if tick_ms:
            time.sleep(tick_ms / 1000)
        ctx.checkpoint({"tick": i + 1}, sync=False)
        ctx.progress(i + 1, total=ticks, unit="ticks")
    if fail_once and not _failed_before(ctx.task_id, label):
        _record(ctx.task_id, label, "fail")
        raise RuntimeError(f"step {label} fails once")
    if not ctx.state.get("ran"):
        with ctx.atomic({"tick": ticks, "ran": True, "from": start}):
            _record(ctx.task_id, label, "run")
    output = {"label": label, "input": ctx.input}
    if int(ctx.state.get("from", 0)):  # resumed from a checkpoint: say from where
        output["resumed_from"] = int(ctx.state["from"])
    return output


for _name in ("pipeline_step", "pipeline_join"):
    # one attempt: a failure fails the pipeline at once; after a lost worker the
    # step is run again at once
    task(
        name=_name,
        rollback=_undo,
        params=STEP_PARAMS,
        max_attempts=1,
        recovery_backoff=0,
    )(pipeline_step)
