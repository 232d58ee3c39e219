"""Demo steps ``sentinel`` and ``sentinel_upload_to_s3``, so that the data-pipeline
service's sample payload runs as it is. Nothing is downloaded or uploaded: the first
writes one small made-up scene file per day into ``TETHER_DATA_DIR/sentinel/<owner>/``,
the second copies them into ``TETHER_DATA_DIR/s3/<owner>/<bucket>/`` as a stand-in for
an S3 bucket. Both are pausable, resumable and undone by cancel.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from tether.context import TaskContext
from tether.datasets.errors import DataError
from tether.exceptions import InvalidParams
from tether.registry import task
from tether.tasks import areas

MAX_DAYS = 366
DATE = {
    "type": "string",
    "pattern": r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$",
    "format": "date",
}


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidParams(f"params.{name}: {value!r} is not a date", field=name) from None


def _days(date_start: str, date_end: str | None) -> tuple[date, int]:
    """The first day and the number of days; InvalidParams naming the bad field."""
    start = _day(date_start, "date_start")
    end = _day(date_end, "date_end") if date_end else start
    days = (end - start).days + 1
    if not 1 <= days <= MAX_DAYS:
        raise InvalidParams(
            f"params.date_end: {end} must be from date_start ({start}) to {MAX_DAYS - 1} "
            f"days after it (at most {MAX_DAYS} days)",
            field="date_end",
        )
    return start, days


def _check_dates(params: dict[str, Any]) -> None:
    _days(params["date_start"], params.get("date_end"))


def _scenes_dir(ctx: TaskContext) -> Path:
    owner = areas.owner_dir("sentinel", areas.owner_of(ctx))
    return owner / f"task-{areas.origin_task_id(ctx)}"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)  # a rerun after a crash rewrites it whole


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o600)
    tmp.replace(target)


def _undo_scenes(ctx: TaskContext) -> None:
    """Rollback: the scene files are deleted."""
    areas.remove(_scenes_dir(ctx))


@task(
    params={
        "type": "object",
        "properties": {
            "date_start": {**DATE, "description": "first day (YYYY-MM-DD)"},
            "date_end": {**DATE, "description": "last day (default: date_start)"},
            "seconds_per_day": {
                "type": "number",
                "minimum": 0,
                "maximum": 60,
                "default": 0.1,
                "description": "simulated download time of one day's scene",
            },
        },
        "required": ["date_start"],
        "additionalProperties": False,
    },
    rollback=_undo_scenes,
    check=_check_dates,
    description="Demo: simulates fetching one satellite scene per day from date_start "
    f"to date_end (at most {MAX_DAYS} days) as small files in TETHER_DATA_DIR/sentinel/"
    "<you>/. Output: {path, files, days}. Cancel deletes them.",
)
def sentinel(
    ctx: TaskContext, *, date_start: str, date_end: str | None = None, seconds_per_day: float = 0.1
) -> dict[str, Any]:
    start, days = _days(date_start, date_end)
    out = _scenes_dir(ctx)
    out.mkdir(mode=0o700, exist_ok=True)
    for i in range(ctx.state.get("day", 0), days):
        ctx.progress(i, total=days, unit="days", message=f"scene of {start + timedelta(i)}")
        time.sleep(seconds_per_day)
        day = (start + timedelta(i)).isoformat()
        cloud = int(hashlib.sha256(day.encode()).hexdigest()[:2], 16) * 100 // 255
        scene = {"date": day, "tile": "T43PFS", "cloud_cover": cloud, "demo": True}
        _write(out / f"S2_{day}.json", json.dumps(scene).encode())
        ctx.checkpoint({"day": i + 1}, sync=False)
    ctx.progress(days, total=days, unit="days", message="done")
    files = [areas.relative(out / f"S2_{start + timedelta(i)}.json") for i in range(days)]
    return {"path": areas.relative(out), "files": files, "days": days}


def _bucket_dir(ctx: TaskContext, bucket: str) -> Path:
    owner = areas.owner_dir("s3", areas.owner_of(ctx))
    return owner / bucket / f"task-{areas.origin_task_id(ctx)}"


def _undo_upload(ctx: TaskContext) -> None:
    """Rollback: the copies are deleted."""
    bucket = ctx.state.get("bucket")
    if isinstance(bucket, str):
        areas.remove(_bucket_dir(ctx, bucket))


def _files_of(value: Any) -> list[str]:
    outputs = value if isinstance(value, list) else [value]
    files: list[str] = []
    for out in outputs:
        if isinstance(out, dict) and isinstance(out.get("files"), list):
            files += [f for f in out["files"] if isinstance(f, str)]
        elif isinstance(out, dict) and isinstance(out.get("path"), str):
            files.append(out["path"])
        elif isinstance(out, str) and out:
            files.append(out)
    if not files:
        raise DataError("sentinel_upload_to_s3: its input names no files (run it after sentinel)")
    return files


@task(
    params={
        "type": "object",
        "properties": {
            "bucket": {
                "type": "string",
                "pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                "default": "tether-demo",
                "description": "bucket name (a directory under TETHER_DATA_DIR/s3/<you>/)",
            },
        },
        "additionalProperties": False,
    },
    rollback=_undo_upload,
    description="Demo: 'uploads' the files its input names (sentinel's output) by "
    "copying them into TETHER_DATA_DIR/s3/<you>/<bucket>/. Output: {bucket, path, "
    "keys}. Cancel deletes the copies.",
)
def sentinel_upload_to_s3(ctx: TaskContext, *, bucket: str = "tether-demo") -> dict[str, Any]:
    names = _files_of(ctx.input)
    sources = [areas.owned_file(ctx, n, step="sentinel_upload_to_s3") for n in names]
    out = _bucket_dir(ctx, bucket)
    if not ctx.state:
        ctx.checkpoint({"bucket": bucket, "done": 0})  # a rollback knows where to look
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    for i in range(ctx.state.get("done", 0), len(sources)):
        _copy(sources[i], out / sources[i].name)
        ctx.checkpoint({"bucket": bucket, "done": i + 1}, sync=False)
        ctx.progress(i + 1, total=len(sources), unit="files")
    keys = [f"{out.name}/{s.name}" for s in sources]
    return {
        "bucket": bucket,
        "path": areas.relative(out),
        "uri": f"s3://{bucket}/{out.name}/",
        "keys": keys,
    }
