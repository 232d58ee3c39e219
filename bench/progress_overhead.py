"""Cost of a control point: ``ctx.progress(i, total=n)`` in a tight loop vs the bare loop.

Pure Python, no database: the TaskContext writes to an in-memory store whose ``save``
does trivial work (stores the last document, returns True) and whose ``atomic`` is a
``contextlib.nullcontext()``. With the default flush interval (0.2 s) a progress call
flushes, i.e. builds a progress snapshot and calls ``store.save``, about 5 times a
second, as it would in a real task.

Measured with ``time.perf_counter`` as the best of ``--repeats`` runs of
``--iterations`` iterations each:

* bare loop                                   ``for i in range(n): pass``-ish
* ``ctx.progress(i, total=n)``                 (includes the control check)
* ``ctx.should_stop()``
* ``ctx.checkpoint({"i": i}, sync=False)``     (lazy checkpoint, coalesced writes)

The per-call figures are (loop time - bare loop time) / iterations, in microseconds.
Progress lines go to stderr; the last line of stdout is one JSON object.

    .venv/bin/python bench/progress_overhead.py [--iterations 2000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from tether.context import TaskContext

TARGET_US = 2.0


class MemoryStore:
    """A ContextStore that keeps the last write in memory (trivial work per save)."""

    def __init__(self) -> None:
        self.saves = 0
        self.progress: dict[str, Any] | None = None
        self.checkpoint: dict[str, Any] | None = None

    def save(
        self,
        task_id: int,
        token: str,
        *,
        progress: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> bool:
        self.saves += 1
        if progress is not None:
            self.progress = progress
        if checkpoint is not None:
            self.checkpoint = checkpoint
        return True

    def atomic(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def new_ctx() -> tuple[TaskContext, MemoryStore]:
    store = MemoryStore()
    return TaskContext(task_id=1, token="t", store=store), store


# The bare loop is an empty ``for`` loop, so "loop - bare" is the whole cost of the call
# as task code pays it (Python call overhead included; a conservative figure).
def loop_bare(ctx: TaskContext, n: int) -> float:
    t0 = time.perf_counter()
    for _i in range(n):
        pass
    return time.perf_counter() - t0


def loop_progress(ctx: TaskContext, n: int) -> float:
    progress = ctx.progress
    t0 = time.perf_counter()
    for i in range(n):
        progress(i, total=n)
    return time.perf_counter() - t0


def loop_should_stop(ctx: TaskContext, n: int) -> float:
    should_stop = ctx.should_stop
    t0 = time.perf_counter()
    for _i in range(n):
        should_stop()
    return time.perf_counter() - t0


def loop_checkpoint(ctx: TaskContext, n: int) -> float:
    checkpoint = ctx.checkpoint
    t0 = time.perf_counter()
    for i in range(n):
        checkpoint({"i": i}, sync=False)
    return time.perf_counter() - t0


def best_of(
    name: str, fn: Callable[[TaskContext, int], float], n: int, repeats: int
) -> tuple[float, int]:
    best = float("inf")
    saves = 0
    for r in range(repeats):
        ctx, store = new_ctx()
        elapsed = fn(ctx, n)
        if elapsed < best:
            best, saves = elapsed, store.saves
        log(
            f"  {name:<12} run {r + 1}/{repeats}: {elapsed:.3f} s "
            f"({elapsed / n * 1e6:.3f} us/iter, {store.saves} saves)"
        )
    return best, saves


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = max(1, args.iterations)
    repeats = max(1, args.repeats)

    log(f"progress_overhead: {n:,} iterations, best of {repeats}")
    bare, _ = best_of("bare", loop_bare, n, repeats)
    prog, prog_saves = best_of("progress", loop_progress, n, repeats)
    stop, _ = best_of("should_stop", loop_should_stop, n, repeats)
    ckpt, ckpt_saves = best_of("checkpoint", loop_checkpoint, n, repeats)

    def per_call(t: float) -> float:
        return round(max(t - bare, 0.0) / n * 1e6, 4)

    result = {
        "benchmark": "progress_overhead",
        "iterations": n,
        "repeats": repeats,
        "bare_loop_us_per_iter": round(bare / n * 1e6, 4),
        "progress_us_per_call": per_call(prog),
        "should_stop_us_per_call": per_call(stop),
        "checkpoint_lazy_us_per_call": per_call(ckpt),
        "progress_saves_in_best_run": prog_saves,
        "checkpoint_saves_in_best_run": ckpt_saves,
        "target_us": TARGET_US,
        "progress_within_target": per_call(prog) <= TARGET_US,
    }
    log(
        f"progress: {result['progress_us_per_call']} us/call (target <= {TARGET_US}), "
        f"should_stop: {result['should_stop_us_per_call']} us/call, "
        f"lazy checkpoint: {result['checkpoint_lazy_us_per_call']} us/call"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
