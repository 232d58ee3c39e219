"""The ``csv_import`` task type: a CSV upload into a dataset table.

Rows are loaded into a staging table (``tstg_<task id>``) in batches; each batch commits
together with the checkpoint (records consumed), so pause, resume, crash and
redelivery continue exactly where the last batch ended: no row lost, none twice. On
success the staging table becomes (create, replace) or is appended to (append) the
dataset's table in one transaction, so readers never see a partial import. Cancel,
pause expiry or a bad row drop the staging table: the target is as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from tether.context import TaskContext
from tether.datasets import sql
from tether.datasets.files import DataError, Records
from tether.datasets.types import DEFAULT_NULLS, PARSERS, TYPES, CellError, clean_names, infer
from tether.models import Dataset, Task, Upload
from tether.registry import task

log = logging.getLogger(__name__)
BATCH_ROWS = 5000
SAMPLE_ROWS = 1000
MAX_SKIPPED_LINES = 100
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

PARAMS = {
    "type": "object",
    "properties": {
        "upload": {"type": "integer", "minimum": 1,
                   "description": "id of an upload (POST /api/v1/datasets/import makes one)"},
        "dataset": {"type": "string", "pattern": NAME_PATTERN,
                    "description": "dataset name: letters, digits, '_' and '-'"},
        "mode": {"enum": ["create", "append", "replace"], "default": "create"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
        "header": {"type": "boolean", "default": True},
        "null_values": {"type": "array", "items": {"type": "string", "maxLength": 20},
                        "maxItems": 20, "default": list(DEFAULT_NULLS)},
        "columns": {"type": "array", "maxItems": 1000, "items": {
            "type": "object", "required": ["name", "type"],
            "properties": {"name": {"type": "string"}, "type": {"enum": list(TYPES)}},
            "additionalProperties": False}},
        "on_error": {"enum": ["fail", "skip"], "default": "fail"},
    },
    "required": ["upload", "dataset"],
    "additionalProperties": False,
}


def _owner_id(ctx: TaskContext) -> int:
    return int(Task.objects.filter(id=ctx.task_id).values_list("owner_id", flat=True)[0])


def _upload(ctx: TaskContext, upload_id: int) -> Upload:
    upload = Upload.objects.filter(id=upload_id, owner_id=_owner_id(ctx)).first()
    if upload is None:
        raise DataError(f"no upload {upload_id}")
    return upload


def _upload_file(upload: Upload) -> Any:
    from tether.datasets.files import data_dir

    return data_dir("uploads") / upload.path


def _discard_upload(upload_id: int) -> None:
    upload = Upload.objects.filter(id=upload_id).first()
    if upload is not None:
        _upload_file(upload).unlink(missing_ok=True)
        upload.delete()


Sample = list[tuple[list[str], int]]  # records read ahead, with their line numbers


def _plan(ctx: TaskContext, records: Records, *, dataset: str, mode: str, header: bool,
          columns: Sequence[dict[str, str]] | None, nulls: Sequence[str]
          ) -> tuple[list[dict[str, str]], Sample]:
    """Decide the columns (declared, the dataset's for append, or inferred) and return
    them with the records read ahead as a sample."""
    first = next(records, None)
    if first is None:
        raise DataError("the file is empty (not even a header)")
    try:
        names = (clean_names(first) if header
                 else [f"column_{i}" for i in range(1, len(first) + 1)])
    except CellError as exc:
        raise DataError(f"line 1 (header): {exc}") from None
    sample: Sample = [] if header else [(first, records.line)]
    for row in records:
        sample.append((row, records.line))
        if len(sample) >= SAMPLE_ROWS:
            break
    existing = Dataset.objects.filter(owner_id=_owner_id(ctx), name=dataset).first()
    if mode == "create" and existing is not None:
        raise DataError(f"dataset {dataset!r} exists already (use mode append or replace)")
    if mode == "append" and existing is None:
        raise DataError(f"dataset {dataset!r} does not exist (use mode create)")
    if columns:
        if len(columns) != len(names):
            raise DataError(f"{len(columns)} columns declared but the file has {len(names)}")
        try:
            declared = clean_names([c["name"] for c in columns])
        except CellError as exc:
            raise DataError(f"declared columns: {exc}") from None
        planned = [{"name": n, "type": c["type"]}
                   for n, c in zip(declared, columns, strict=True)]
    elif mode == "append" and existing is not None:
        planned = [dict(c) for c in existing.columns]
    else:
        planned = infer(names, [r for r, _ in sample], nulls)
    if mode == "append" and existing is not None:
        have = [c["name"] for c in existing.columns]
        if [c["name"] for c in planned] != have or planned != existing.columns:
            raise DataError(f"the file's columns {[c['name'] for c in planned]} do not "
                            f"match dataset {dataset!r}: {existing.columns}")
    return planned, sample


class _Batch:
    """Parses records into typed rows; collects skipped lines."""

    def __init__(self, columns: Sequence[dict[str, str]], nulls: Sequence[str],
                 skip: bool, skipped: list[dict[str, Any]], skipped_count: int) -> None:
        self.parsers = [PARSERS[c["type"]] for c in columns]
        self.width = len(columns)
        self.nulls = frozenset(nulls)
        self.skip = skip
        self.skipped = skipped
        self.skipped_count = skipped_count

    def parse(self, record: list[str], line: int) -> list[Any] | None:
        if not record:
            return None  # a blank line
        try:
            if len(record) != self.width:
                raise CellError(f"has {len(record)} fields, expected {self.width}")
            nulls = self.nulls
            return [None if cell in nulls else parse(cell)
                    for parse, cell in zip(self.parsers, record, strict=True)]
        except CellError as exc:
            if not self.skip:
                raise DataError(f"line {line}: {exc}") from None
            self.skipped_count += 1
            if len(self.skipped) < MAX_SKIPPED_LINES:
                self.skipped.append({"line": line, "reason": str(exc)})
            return None


def drop_staging(ctx: TaskContext) -> None:
    """Rollback: the target is left exactly as it was before the import."""
    state = ctx.state
    if state.get("published"):
        if state.get("mode") == "create" and state.get("dataset_id"):
            with transaction.atomic():
                table = Dataset.objects.filter(id=state["dataset_id"]).values_list(
                    "table", flat=True).first()
                Dataset.objects.filter(id=state["dataset_id"]).delete()
                if table:
                    sql.drop_table(table)
        else:
            raise DataError("too late to undo: the import had already been published")
    sql.drop_table(sql.staging_name(ctx.task_id))
    if state.get("upload"):
        _discard_upload(int(state["upload"]))


@task(name="csv_import", queue="data", rollback=drop_staging, params=PARAMS, max_attempts=3)
def csv_import(ctx: TaskContext, *, upload: int, dataset: str, mode: str = "create",
               delimiter: str = ",", header: bool = True,
               null_values: Sequence[str] = DEFAULT_NULLS,
               columns: Sequence[dict[str, str]] | None = None,
               on_error: str = "fail") -> dict[str, Any]:
    """Import an uploaded CSV file into a dataset (create, append or replace)."""
    began = time.monotonic()
    stage = sql.staging_name(ctx.task_id)
    state = dict(ctx.state)
    try:
        path = _upload_file(_upload(ctx, upload))
        if not path.exists():
            raise DataError(f"the file of upload {upload} is gone")
        with Records(path, delimiter) as records:
            if "columns" not in state:  # first run: plan, then create the staging table
                planned, sample = _plan(ctx, records, dataset=dataset, mode=mode,
                                        header=header, columns=columns, nulls=null_values)
                state = {"columns": planned, "consumed": 0, "loaded": 0, "skipped": [],
                         "skipped_count": 0, "upload": upload, "mode": mode,
                         "header": header}
                with ctx.atomic(state):
                    sql.drop_table(stage)
                    sql.create_table(stage, planned)
            else:  # resumed: skip what earlier runs loaded (and committed)
                sample = []
                records.skip(state["consumed"] + (1 if state["header"] else 0))
            result = _load(ctx, records, stage, state, sample, null_values,
                           on_error == "skip")
            return _publish(ctx, state, dataset=dataset, mode=mode, began=began, **result)
    except DataError:
        sql.drop_table(stage)
        _discard_upload(upload)
        raise


def _numbered(sample: Sample, records: Records) -> Iterator[tuple[list[str], int]]:
    yield from sample
    for record in records:
        yield record, records.line


def _load(ctx: TaskContext, records: Records, stage: str, state: dict[str, Any],
          sample: Sample, nulls: Sequence[str], skip: bool) -> dict[str, Any]:
    """Parse and load every remaining record, one transaction per batch together with
    the checkpoint (records consumed so far)."""
    columns = state["columns"]
    batch = _Batch(columns, nulls, skip, list(state["skipped"]), state["skipped_count"])
    consumed, loaded = state["consumed"], state["loaded"]
    rows: list[list[Any]] = []

    def commit(last: bool) -> None:
        nonlocal loaded, rows, state
        loaded += len(rows)
        state = {**state, "consumed": consumed, "loaded": loaded,
                 "skipped": batch.skipped, "skipped_count": batch.skipped_count}
        with ctx.atomic(state):
            sql.insert(stage, columns, rows)
        rows = []
        done = max(records.bytes_read, 1)
        total = loaded if last else max(loaded, int(loaded * records.size / done))
        ctx.progress(loaded, total=total, unit="rows")

    for record, line in _numbered(sample, records):
        consumed += 1
        row = batch.parse(record, line)
        if row is not None:
            rows.append(row)
            if len(rows) >= BATCH_ROWS:
                commit(last=False)
    commit(last=True)
    return {"loaded": loaded, "skipped": batch.skipped,
            "skipped_count": batch.skipped_count}


def _publish(ctx: TaskContext, state: dict[str, Any], *, dataset: str, mode: str,
             began: float, loaded: int, skipped: list[dict[str, Any]],
             skipped_count: int) -> dict[str, Any]:
    owner_id = _owner_id(ctx)
    stage = sql.staging_name(ctx.task_id)
    columns = state["columns"]
    now = timezone.now()
    final = {**state, "published": True}
    try:
        with ctx.atomic(final):
            existing = Dataset.objects.select_for_update().filter(
                owner_id=owner_id, name=dataset).first()
            if mode == "append":
                if existing is None:
                    raise DataError(f"dataset {dataset!r} was deleted during the import")
                sql.append(stage, existing.table, columns)
                sql.drop_table(stage)
                existing.row_count = sql.count(existing.table)
                target = existing
            else:
                if mode == "create" and existing is not None:
                    raise DataError(f"dataset {dataset!r} was created meanwhile")
                table = sql.new_table_name()
                sql.rename(stage, table)
                if existing is not None:  # replace
                    sql.drop_table(existing.table)
                    existing.table, existing.columns = table, columns
                    target = existing
                else:
                    target = Dataset(owner_id=owner_id, name=dataset, table=table,
                                     columns=columns)
                target.row_count = loaded
            target.last_import_at = now
            target.last_import_task_id = ctx.task_id
            target.save()
            final["dataset_id"] = target.pk
    except IntegrityError:
        raise DataError(f"dataset {dataset!r} was created meanwhile") from None
    _discard_upload(int(state["upload"]))
    return {"dataset": dataset, "mode": mode, "rows": loaded, "columns": columns,
            "skipped_count": skipped_count, "skipped_lines": skipped,
            "seconds": round(time.monotonic() - began, 3)}
