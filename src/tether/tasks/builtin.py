"""countdown, fibonacci, add and render: small, checkpointing, pausable task types."""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from tether.context import TaskContext
from tether.exceptions import InvalidParams
from tether.registry import task

MAX_SECONDS = 86_400
MAX_FIB_N = 20_000
MAX_FRAMES = 10_000


@task(
    params={
        "type": "object",
        "properties": {
            "seconds": {
                "type": "number",
                "minimum": 0,
                "maximum": MAX_SECONDS,
                "description": f"how long to count down; at most {MAX_SECONDS} (a day)",
            },
            "tick_ms": {
                "type": "integer",
                "minimum": 1,
                "maximum": 60_000,
                "default": 10,
                "description": "milliseconds between progress reports (1-60000)",
            },
        },
        "required": ["seconds"],
        "additionalProperties": False,
    }
)
def countdown(ctx: TaskContext, *, seconds: float, tick_ms: int = 10) -> dict[str, Any]:
    """Count down for `seconds`, reporting progress every tick (demo and test workhorse)."""
    ticks = max(1, round(seconds * 1000 / tick_ms))
    pause = tick_ms / 1000
    for i in range(ctx.state.get("tick", 0), ticks):
        time.sleep(pause)
        ctx.checkpoint({"tick": i + 1}, sync=False)
        ctx.progress(i + 1, total=ticks, unit="ticks")
    return {"seconds": seconds, "ticks": ticks}


@task(
    params={
        "type": "object",
        "properties": {
            "n": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_FIB_N,
                "description": f"n is capped at {MAX_FIB_N}: F({MAX_FIB_N}) already has 4,180 "
                "digits, near Python's 4,300-digit limit for printing integers",
            },
            "step_ms": {
                "type": "integer",
                "minimum": 0,
                "maximum": 1000,
                "default": 0,
                "description": "pause between steps, to make short runs watchable",
            },
        },
        "required": ["n"],
        "additionalProperties": False,
    }
)
def fibonacci(ctx: TaskContext, *, n: int, step_ms: int = 0) -> dict[str, Any]:
    """Compute the n-th Fibonacci number (F(0)=0, F(1)=1). The value is a decimal string,
    since it quickly outgrows the integers JSON clients can hold."""
    i = ctx.state.get("i", 0)
    a = int(ctx.state.get("a", "0"), 16)
    b = int(ctx.state.get("b", "1"), 16)
    while i < n:
        if step_ms:
            time.sleep(step_ms / 1000)
        a, b = b, a + b
        i += 1
        ctx.checkpoint({"i": i, "a": format(a, "x"), "b": format(b, "x")}, sync=False)
        ctx.progress(i, total=n, unit="steps")
    value = str(a)
    return {"n": n, "value": value, "digits": len(value.lstrip("-"))}


@task(
    params={
        "type": "object",
        "properties": {
            "operand1": {"type": "number"},
            "operand2": {"type": "number"},
        },
        "required": ["operand1", "operand2"],
        "additionalProperties": False,
    }
)
def add(ctx: TaskContext, *, operand1: float, operand2: float) -> dict[str, Any]:
    """Add two numbers. A sum beyond the largest float (about 1.8e308) fails the task."""
    try:
        total = operand1 + operand2
    except OverflowError:  # a huge integer plus a float
        total = math.inf
    # PostgreSQL's jsonb hands 1e308 back as a 309-digit integer, and integers never
    # overflow: a sum beyond the largest float fails as on the other databases (and a
    # JSON client could read it only as infinity anyway).
    if abs(total) > sys.float_info.max or not math.isfinite(total):
        raise InvalidParams(
            f"the sum overflows to infinity ({_short(operand1)} + {_short(operand2)})"
        )
    ctx.progress(1, total=1, unit="sums")
    return {"operand1": operand1, "operand2": operand2, "sum": total}


def _short(number: float) -> str:
    if isinstance(number, int) and 2**53 < abs(number) <= sys.float_info.max:
        number = float(number)  # 1e308 reads the same whether kept as a float or an int
    text = repr(number)
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


STAGES = ("load scene", "render", "composite", "write")


def _render_dir(ctx: TaskContext) -> Path:
    return Path(settings.TETHER_HOME) / "renders" / f"task-{ctx.task_id}"


def _undo_render(ctx: TaskContext) -> None:
    shutil.rmtree(_render_dir(ctx), ignore_errors=True)


@task(
    queue="render",
    rollback=_undo_render,
    params={
        "type": "object",
        "properties": {
            "frames": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_FRAMES,
                "description": f"frames to render; at most {MAX_FRAMES}",
            },
            "seconds_per_frame": {
                "type": "number",
                "minimum": 0,
                "maximum": 600,
                "default": 0.2,
                "description": "simulated render time of one frame (0-600)",
            },
        },
        "required": ["frames"],
        "additionalProperties": False,
    },
)
def render(ctx: TaskContext, *, frames: int, seconds_per_frame: float = 0.2) -> dict[str, Any]:
    """Simulated render-farm job: each frame goes through load/render/composite/write and
    is written as a small image file; cancel deletes the frames written so far."""
    out = _render_dir(ctx)
    out.mkdir(parents=True, exist_ok=True)
    stage_time = seconds_per_frame / len(STAGES)
    for frame in range(ctx.state.get("frame", 0) + 1, frames + 1):
        for stage in STAGES:
            ctx.progress(
                frame - 1, total=frames, unit="frames", message=f"frame {frame}/{frames}: {stage}"
            )
            time.sleep(stage_time)
        _write_frame(out / f"frame_{frame:05d}.ppm", frame, frames)
        ctx.checkpoint({"frame": frame})
        ctx.progress(frame, total=frames, unit="frames", message=f"frame {frame}/{frames}: done")
    return {"frames": frames, "output": str(out)}


def _write_frame(path: Path, frame: int, frames: int, size: int = 16) -> None:
    """A tiny PPM image whose shade moves with the frame number (idempotent)."""
    shade = int(255 * frame / frames)
    pixels = bytes(
        v for y in range(size) for x in range(size) for v in (shade, x * 16 % 256, y * 16 % 256)
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"P6 %d %d 255\n" % (size, size) + pixels)
    tmp.replace(path)
