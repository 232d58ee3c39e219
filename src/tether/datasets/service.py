"""What the datasets API does, without HTTP: the queries and transactions behind
upload-and-import, list, show, preview rows, delete, export and download. The views
(``api/datasets.py``) parse requests, call these, and shape the answers; errors are the
TetherError subclasses of ``errors``, which the API maps to statuses in one place.

Datasets are per user: another user's dataset is "not found", for staff too (names are
only unique per owner).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from django.db import DatabaseError, connection, transaction
from django.db.models import QuerySet

from tether import service
from tether.datasets import checks, exporter, sql, sweep
from tether.datasets.errors import DatasetBusy, DatasetExists, DatasetNotFound
from tether.datasets.files import export_path
from tether.datasets.importer import NAME_PATTERN
from tether.exceptions import TaskNotFound
from tether.models import Dataset, Task, Upload
from tether.states import FINAL, Status

DATASET_TASK_TYPES = ("csv_import", "csv_export", "import_csv", "export_csv")
EXPORT_TYPES = ("csv_export", "export_csv")  # (export_csv: the pipeline step)
UNFINISHED = [st.value for st in Status if st not in FINAL]
PREVIEW_CELL_CHARS = 1000  # a longer text cell is cut to this many characters + "…"
PREVIEW_BYTES = 1 << 20  # a page stops once its cells add up to about this (1 row at least)
FETCH_BYTES = 8 << 20  # at most this much (worst case) is fetched from the database at once


def datasets_of(owner: Any) -> QuerySet[Dataset]:
    return Dataset.objects.filter(owner=owner).order_by("name")


def owned(owner: Any, name: str) -> Dataset:
    """The owner's dataset ``name``; another user's is not found like a missing one."""
    ds = Dataset.objects.filter(owner=owner, name=name).first()
    if ds is None:
        raise DatasetNotFound(f"no dataset {name!r}")
    return ds


def unfinished_tasks(owner: Any, name: str) -> list[int]:
    """Ids of the owner's imports and exports naming dataset ``name`` that have not
    ended (paused ones included: they would resume against it)."""
    return list(
        Task.objects.filter(
            owner=owner, type__in=DATASET_TASK_TYPES, status__in=UNFINISHED, params__dataset=name
        )
        .order_by("id")
        .values_list("id", flat=True)[:20]
    )


# -- import ----------------------------------------------------------------------------


def submit_import(
    owner: Any, form: dict[str, Any], path: Path, original_name: str, size: int
) -> Task:
    """Check an upload stored at ``path`` against its form (mode, columns, text) and
    hand it to a ``csv_import`` task. Raises DatasetExists, DatasetNotFound, NotText,
    ColumnsMismatch or DataError before any task or upload row exists."""
    name, mode = form["dataset"], form["mode"]
    existing = Dataset.objects.filter(owner=owner, name=name).first()
    if mode == "create" and existing is not None:
        raise DatasetExists(
            f"dataset {name!r} exists already; use mode append or replace, or another name"
        )
    if mode == "append" and existing is None:
        raise DatasetNotFound(f"no dataset {name!r} to append to; use mode create")
    checks.check_upload(
        path,
        dataset=name,
        delimiter=form["delimiter"],
        header=form["header"],
        declared=form.get("columns"),
        append_to=existing.columns if mode == "append" and existing is not None else None,
    )
    params: dict[str, Any] = {
        "dataset": name,
        "mode": mode,
        "delimiter": form["delimiter"],
        "header": form["header"],
        "on_error": form["on_error"],
    }
    for key in ("null_values", "columns"):
        if key in form:
            params[key] = form[key]
    with transaction.atomic():  # the upload row and the task, or neither
        upload = Upload.objects.create(
            owner=owner, path=path.name, original_name=original_name[:255], size=size
        )
        return service.submit(owner, "csv_import", {"upload": upload.public_id, **params})


# -- rows ------------------------------------------------------------------------------


def json_value(value: Any, kind: str) -> Any:
    """A cell as JSON: booleans as true/false (SQLite and MySQL store 0/1), dates and
    timestamps as ISO 8601, non-finite floats as the strings "nan", "inf", "-inf"."""
    if value is None:
        return None
    if kind == "boolean":
        return bool(value)
    if kind == "integer":
        return int(value)
    if kind == "float":
        number = float(value)
        return number if math.isfinite(number) else str(number)
    if kind == "timestamptz" and isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # MySQL/MariaDB: DATETIME, stored in UTC
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value


def read_rows(ds: Dataset, limit: int, offset: int) -> tuple[list[list[Any]], bool]:
    """Rows ``offset`` … ``offset + limit - 1`` in insertion order, as JSON values, and
    whether the page was cut short: text cells over PREVIEW_CELL_CHARS characters end
    in "…", and rows stop once about PREVIEW_BYTES are taken (the database sends at
    most PREVIEW_CELL_CHARS + 1 characters of a cell)."""
    kinds = [c["type"] for c in ds.columns]
    names = ", ".join(
        f"SUBSTR({sql.q(c['name'])}, 1, {PREVIEW_CELL_CHARS + 1})"
        if c["type"] == "text"
        else sql.q(c["name"])
        for c in ds.columns
    )
    worst = sum(4 * PREVIEW_CELL_CHARS + 8 if k == "text" else 40 for k in kinds)
    step = max(1, FETCH_BYTES // worst)
    rows: list[list[Any]] = []
    size, cut = 0, False
    with connection.cursor() as cur:
        while len(rows) < limit and not cut:
            want = min(step, limit - len(rows))
            cur.execute(
                f"SELECT {names} FROM {sql.q(ds.table)} ORDER BY {sql.ROW_KEY} LIMIT %s OFFSET %s",
                [want, offset + len(rows)],
            )
            fetched = cur.fetchall()
            for row in fetched:
                if size >= PREVIEW_BYTES:
                    cut = True
                    break
                cells = [json_value(v, k) for v, k in zip(row, kinds, strict=True)]
                for i, cell in enumerate(cells):
                    if isinstance(cell, str) and len(cell) > PREVIEW_CELL_CHARS:
                        cells[i] = cell[:PREVIEW_CELL_CHARS] + "…"
                        cut = True
                    size += len(str(cell)) + 2
                rows.append(cells)
            if len(fetched) < want:
                break
    return rows, cut


def rows_page(owner: Any, name: str, limit: int, offset: int) -> dict[str, Any]:
    """A page of the owner's dataset ``name`` as the rows endpoint answers it."""
    ds = owned(owner, name)
    try:
        rows, truncated = read_rows(ds, limit, offset)
    except DatabaseError:  # replaced (new table) or deleted between lookup and read
        ds = owned(owner, name)
        rows, truncated = read_rows(ds, limit, offset)
    return {
        "dataset": ds.name,
        "columns": ds.columns,
        "row_count": ds.row_count,
        "offset": offset,
        "limit": limit,
        "rows": rows,
        "truncated": truncated,
    }


# -- delete ----------------------------------------------------------------------------


def delete(owner: Any, name: str) -> None:
    """Delete the owner's dataset and its table; DatasetBusy while an import or export
    of it has not ended."""
    owned(owner, name)
    busy = unfinished_tasks(owner, name)
    if busy:
        raise DatasetBusy(
            f"task(s) {', '.join(map(str, busy))} (import/export of "
            f"{name!r}) not finished; wait for them or cancel them first",
            tasks=busy,
        )
    with transaction.atomic():  # the row and its table go together (not on MySQL,
        ds = (
            Dataset.objects.select_for_update()  # whose DDL commits by itself)
            .filter(owner=owner, name=name)
            .first()
        )
        if ds is None:
            raise DatasetNotFound(f"no dataset {name!r}")
        ds.delete()
        sql.drop_table(ds.table)


# -- export and download ---------------------------------------------------------------


def submit_export(owner: Any, name: str, request: dict[str, Any]) -> Task:
    """Check an export request (columns, date range: DataError, DatasetNotFound) and
    start its ``csv_export`` task."""
    params: dict[str, Any] = {"dataset": name, "raw": request["raw"]}
    for key in ("columns", "date_column"):
        if key in request:
            params[key] = request[key]
    for key in ("from_date", "to_date"):
        if key in request:
            params[key] = request[key].isoformat()
    exporter.plan(
        owner.pk,
        name,
        params.get("columns"),
        params.get("date_column"),
        params.get("from_date"),
        params.get("to_date"),
    )
    return service.submit(owner, "csv_export", params)


def export_file(owner: Any, pk: int) -> tuple[IO[bytes], str]:
    """The open file of the owner's succeeded export task ``pk`` and the name to give
    it. An export holds a dataset's rows: per user like datasets, for staff too."""
    task = Task.objects.filter(pk=pk, owner=owner).first()
    if task is None:
        raise TaskNotFound(f"no task {pk}")
    if task.type not in EXPORT_TYPES:
        raise TaskNotFound(
            f"task {pk} is a {task.type} task; only csv_export and export_csv tasks have "
            "a file to download"
        )
    if task.status != Status.SUCCEEDED:
        raise TaskNotFound(
            f"task {pk} is {task.status}; its file can be downloaded once it has succeeded",
            status=task.status,
        )
    try:
        handle = open(export_path(pk), "rb")  # noqa: SIM115 - the caller closes it
    except FileNotFoundError:
        days = sweep.export_ttl() / 86400
        raise TaskNotFound(
            f"the file of task {pk} is gone (export files are deleted "
            f"{days:g} days after they are written)"
        ) from None
    # an export_csv step may take its dataset from its input: its result names it
    named = (task.params or {}).get("dataset") or (task.result or {}).get("dataset")
    dataset = str(named or "export")
    if not re.fullmatch(NAME_PATTERN, dataset):
        dataset = "export"
    return handle, f"{dataset}-{pk}.csv"
