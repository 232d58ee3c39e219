"""The no-op step type of bench/pipelines.py (not a benchmark by itself).

Loaded with ``TETHER_TASK_MODULES=_pipeline_steps`` by the ``tether worker`` processes
(bench/pipelines.py copies it to a directory on their PYTHONPATH) and imported directly
for the embedded executor. A step returns when it started and ended (``time.time()``):
its result is the next step's ``ctx.input``, so the gap between one step's return and
the next one's start can be read from the tasks' stored inputs and results.
"""

from __future__ import annotations

import time

from tether import task
from tether.context import TaskContext

STEP = "bench_step"


@task(name=STEP, description="Does nothing; returns when it started and ended.")
def bench_step(ctx: TaskContext) -> dict[str, float]:
    return {"start": time.time(), "end": time.time()}
