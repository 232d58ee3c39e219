"""The ``csv_export`` task type: a dataset (or a date range of it) to a CSV file.

Pages of rows are appended to ``export-<task id>.csv.part`` in row order; about once a
second (and before a pause or cancel takes effect) the file is synced and the checkpoint
records the last row key written and the file size, so a resumed run truncates any
unrecorded tail and continues exactly after the last recorded row. The file gets its
final name only when complete (atomic rename). Every path writes RFC 4180 CSV: a cell
holding a comma, a quote, CR or LF is quoted. Text cells a spreadsheet could take as a
formula get a leading ' unless ``raw`` is set (``csv_output.formula_like``). Cancel deletes the
partial file.
"""

from __future__ import annotations

import csv
import os
import time
from datetime import date
from pathlib import Path
from typing import IO, Any

from tether.context import TaskContext
from tether.datasets import sql
from tether.datasets.csv_output import CsvLines
from tether.datasets.dialects import dialect
from tether.datasets.errors import DataError, DatasetNotFound
from tether.datasets.files import export_path
from tether.datasets.importer import NAME_PATTERN, task_owner
from tether.models import Dataset
from tether.registry import task

PAGE_ROWS = 100_000  # rows per page streamed by COPY (PostgreSQL): a pause waits for one
SELECT_PAGE_ROWS = 20_000  # rows per SELECT (the others: a page is held in memory)
SYNC_SECONDS = 1.0  # the file is synced and checkpointed about this often
DATE_TYPES = ("date", "timestamp", "timestamptz")

PARAMS = {
    "type": "object",
    "properties": {
        "dataset": {"type": "string", "pattern": NAME_PATTERN},
        "columns": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "maxItems": 1000,
            "description": "columns to export (default: all)",
        },
        "date_column": {"type": "string", "description": "column for from_date/to_date"},
        "from_date": {
            "type": "string",
            "format": "date",
            "description": "first day included (YYYY-MM-DD)",
        },
        "to_date": {
            "type": "string",
            "format": "date",
            "description": "last day included (YYYY-MM-DD)",
        },
        "raw": {
            "type": "boolean",
            "default": False,
            "description": "do not neutralise cells that look like formulas",
        },
    },
    "required": ["dataset"],
    "additionalProperties": False,
}


def _day(value: str | None, what: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise DataError(f"{what} {value!r} is not a date (YYYY-MM-DD)", field=what) from None


def date_range(from_date: str | None, to_date: str | None) -> tuple[date | None, date | None]:
    """The days of a range; DataError (with its ``field``) when one is not a date or
    the range is empty. The export_csv step checks its params with it on submit."""
    start, end = _day(from_date, "from_date"), _day(to_date, "to_date")
    if start and end and start > end:
        raise DataError(f"from_date {start} is after to_date {end}", field="to_date")
    return start, end


def plan(
    owner_id: int,
    dataset: str,
    columns: list[str] | None,
    date_column: str | None,
    from_date: str | None,
    to_date: str | None,
) -> dict[str, Any]:
    """Check an export request; raises DataError naming the problem. Also used by the
    API to answer 400/404 before a task is created."""
    ds = Dataset.objects.filter(owner_id=owner_id, name=dataset).first()
    if ds is None:
        raise DatasetNotFound(f"no dataset {dataset!r}")
    by_name = {c["name"]: c for c in ds.columns}
    unknown = [c for c in columns or [] if c not in by_name]
    if unknown:
        raise DataError(f"unknown column(s) {unknown}; the dataset has {list(by_name)}")
    start, end = date_range(from_date, to_date)
    if (start or end) and not date_column:
        raise DataError("from_date/to_date need date_column")
    if date_column and by_name.get(date_column, {}).get("type") not in DATE_TYPES:
        raise DataError(
            f"date_column {date_column!r} must be a date or timestamp column of the dataset"
        )
    return {
        "dataset": ds,
        "columns": [by_name[c] for c in columns or list(by_name)],
        "start": start,
        "end": end,
    }


def _remove(task_id: int) -> None:
    final = export_path(task_id)
    for path in (final, _part(final)):
        path.unlink(missing_ok=True)


def _part(final: Path) -> Path:
    return final.with_name(final.name + ".part")


def delete_partial(ctx: TaskContext) -> None:
    """Rollback: no file is left behind."""
    _remove(ctx.task_id)


@task(
    name="csv_export",
    queue="data",
    rollback=delete_partial,
    params=PARAMS,
    internal=True,  # submitted by POST /datasets/{name}/export after its checks
)
def csv_export(
    ctx: TaskContext,
    *,
    dataset: str,
    columns: list[str] | None = None,
    date_column: str | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    """Export a dataset to CSV; download it with GET /api/v1/tasks/{id}/download."""
    began = time.monotonic()
    p = plan(task_owner(ctx), dataset, columns, date_column, from_date, to_date)
    table, cols = p["dataset"].table, p["columns"]
    final = export_path(ctx.task_id)
    part = _part(final)
    state = dict(ctx.state)
    if state.get("complete") and final.exists():  # stopped after the rename
        return _result(dataset, state, final, began)
    if not state:  # (no checkpoint yet: a run that stops now starts over)
        total = (
            sql.count(table, date_column=date_column, start=p["start"], end=p["end"])
            if p["start"] or p["end"]
            else p["dataset"].row_count
        )
        state = {"after": 0, "bytes": 0, "rows": 0, "total": total}
        with open(part, "wb") as out:
            head = CsvLines()
            csv.writer(head, lineterminator="\r\n").writerow([c["name"] for c in cols])
            out.write(head.text().encode())
            state["bytes"] = out.tell()
    with open(part, "r+b") as out:
        out.truncate(state["bytes"])  # drop anything written after the last checkpoint
        out.seek(state["bytes"])
        synced = time.monotonic()
        page = PAGE_ROWS if dialect().exports_by_copy else SELECT_PAGE_ROWS
        while True:
            n, last = sql.export_page(
                out,
                table,
                cols,
                after=state["after"],
                limit=page,
                raw=raw,
                date_column=date_column,
                start=p["start"],
                end=p["end"],
            )
            if n == 0:
                break
            state = {**state, "after": last, "bytes": out.tell(), "rows": state["rows"] + n}
            if ctx.should_stop() or time.monotonic() - synced >= SYNC_SECONDS:
                _sync(out)  # what the checkpoint records is on disk
                synced = time.monotonic()
                ctx.checkpoint(state, sync=False)  # (raises a pending pause or cancel)
            ctx.progress(state["rows"], total=max(state["total"], state["rows"]), unit="rows")
        _sync(out)
    state["complete"] = True
    ctx.checkpoint(state)
    part.replace(final)
    return _result(dataset, state, final, began)


def _sync(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())


def _result(dataset: str, state: dict[str, Any], final: Path, began: float) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "rows": state["rows"],
        "bytes": state["bytes"],
        "file": final.name,
        "seconds": round(time.monotonic() - began, 3),
    }
