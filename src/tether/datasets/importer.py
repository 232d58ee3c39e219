"""The ``csv_import`` task type: a CSV upload into a dataset table.

Rows are loaded into a staging table (``tstg_<task id>``) in batches; each batch commits
together with the checkpoint (records consumed, and the byte offset and line where the
next record starts), so pause, resume, crash and redelivery continue exactly where the
last batch ended: no row lost, none twice. How a batch is loaded fast: see ``loader``. On
success the staging table becomes (create, replace) or is appended to (append) the
dataset's table in one transaction, so readers never see a partial import. Cancel,
pause expiry or a bad row drop the staging table: the target is as before.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tether.context import TaskContext
from tether.datasets import checks, sql
from tether.datasets.errors import DataError, Interrupted
from tether.datasets.files import Mark, Source, data_dir
from tether.datasets.loader import Loader
from tether.datasets.types import DEFAULT_NULLS, TYPES, infer
from tether.models import Dataset, Task, Upload
from tether.registry import task

SAMPLE_ROWS = 1000  # records read to infer the column types
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
RESERVED_NAMES = frozenset({"import"})  # /datasets/import is the upload endpoint

PARAMS = {
    "type": "object",
    "properties": {
        "upload": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "public id of an upload (POST /api/v1/datasets/import makes one)",
        },
        "dataset": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "dataset name: letters, digits, '_' and '-'",
        },
        "mode": {"enum": ["create", "append", "replace"], "default": "create"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
        "header": {"type": "boolean", "default": True},
        "null_values": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "maxItems": 20,
            "default": list(DEFAULT_NULLS),
        },
        "columns": {
            "type": "array",
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "properties": {"name": {"type": "string"}, "type": {"enum": list(TYPES)}},
                "additionalProperties": False,
            },
        },
        "on_error": {"enum": ["fail", "skip"], "default": "fail"},
    },
    "required": ["upload", "dataset"],
    "additionalProperties": False,
}


def task_owner(ctx: TaskContext) -> int:
    """The id of the user who owns the running task."""
    return int(Task.objects.filter(id=ctx.task_id).values_list("owner_id", flat=True)[0])


UploadRef = str | int  # a public id; an int (the pk) in tasks queued before public ids


def _owned_uploads(owner_id: int, ref: UploadRef) -> QuerySet[Upload]:
    """The upload ``ref`` if ``owner_id`` owns it: every read and delete goes through
    here, so a task never touches another user's upload."""
    by = {"id": ref} if isinstance(ref, int) else {"public_id": str(ref)}
    return Upload.objects.filter(owner_id=owner_id, **by)


def _upload(ctx: TaskContext, ref: UploadRef) -> Upload:
    upload = _owned_uploads(task_owner(ctx), ref).first()
    if upload is None:
        raise DataError(f"no upload {ref}")
    return upload


def _upload_file(upload: Upload) -> Any:
    return data_dir("uploads") / upload.path


def _discard_upload(ctx: TaskContext, ref: UploadRef) -> None:
    upload = _owned_uploads(task_owner(ctx), ref).first()
    if upload is not None:
        _upload_file(upload).unlink(missing_ok=True)
        upload.delete()


def _plan(
    ctx: TaskContext,
    src: Source,
    *,
    dataset: str,
    mode: str,
    header: bool,
    columns: Sequence[dict[str, str]] | None,
    nulls: Sequence[str],
) -> tuple[list[dict[str, str]], Mark, float]:
    """Decide the columns (declared, the dataset's for append, or inferred from a
    sample). Returns them, where the data starts, and the sample's bytes per record."""
    records = src.records()
    first, first_line = checks.first_record(records)
    names = checks.file_names(first, first_line, header=header, declared=columns)
    data_at = src.mark() if header else Mark(src.start, 0)
    sample: list[list[str]] = [] if header else [first]
    for row, _line in records:
        sample.append(row)
        if len(sample) >= SAMPLE_ROWS:
            break
    row_bytes = (src.offset - data_at.offset) / max(1, len(sample))
    existing = Dataset.objects.filter(owner_id=task_owner(ctx), name=dataset).first()
    if mode == "create" and existing is not None:
        raise DataError(f"dataset {dataset!r} exists already (use mode append or replace)")
    if mode == "append" and existing is None:
        raise DataError(f"dataset {dataset!r} does not exist (use mode create)")
    if mode == "append" and existing is not None:  # the staging table in the file's order
        planned = checks.match_columns(
            names,
            dataset,
            existing.columns,
            by_position=not header and not columns,
            declared=columns,
        )
    elif columns:
        planned = [{"name": n, "type": c["type"]} for n, c in zip(names, columns, strict=True)]
    else:
        planned = infer(names, sample, nulls)
    return planned, data_at, row_bytes


def drop_staging(ctx: TaskContext) -> None:
    """Rollback: the target is left exactly as it was before the import (also when the
    cancel came after the publish, in the moment before the task's success)."""
    state = ctx.state
    if state.get("published"):
        _unpublish(state)
    sql.drop_table(sql.staging_name(ctx.task_id))
    if state.get("upload"):
        _discard_upload(ctx, state["upload"])


def retired_name(task_id: int) -> str:
    """Where a replace puts the table it replaced, until its task is over (the sweep
    drops it then; a cancel right after the publish puts it back)."""
    return f"tret_{int(task_id)}"


def _unpublish(state: dict[str, Any]) -> None:
    """Undo a publish: drop a created dataset, delete appended rows, put a replaced
    table back (see _publish for what ``state["before"]`` holds)."""
    before = state.get("before") or {}
    with transaction.atomic():
        ds = (
            Dataset.objects.select_for_update().filter(id=int(state.get("dataset_id") or 0)).first()
        )
        if ds is None:
            return  # deleted meanwhile: nothing left to undo
        mode = state.get("mode")
        if mode == "replace" and ds.table == before.get("table"):
            return  # undone already (a rollback resumed after a crash)
        if mode == "create":
            ds.delete()
            sql.drop_table(ds.table)
            return
        if mode == "append" and "rows_after" in before:
            sql.delete_rows(ds.table, after=before["rows_after"], upto=before["rows_upto"])
            ds.row_count = sql.count(ds.table)
        elif mode == "replace" and before.get("retired") and sql.table_exists(before["retired"]):
            sql.drop_table(ds.table)
            sql.rename(before["retired"], before["table"])
            ds.table, ds.columns = before["table"], before["columns"]
            ds.row_count = before["row_count"]
        else:
            raise DataError("too late to undo: the import had already been published")
        ds.last_import_at = parse_datetime(before.get("last_import_at") or "")
        ds.last_import_task_id = before.get("last_import_task_id")
        ds.save()


@task(
    name="csv_import",
    queue="data",
    rollback=drop_staging,
    params=PARAMS,
    max_attempts=3,
    internal=True,  # its upload is checked by the datasets API, which submits it
)
def csv_import(
    ctx: TaskContext,
    *,
    upload: UploadRef,
    dataset: str,
    mode: str = "create",
    delimiter: str = ",",
    header: bool = True,
    null_values: Sequence[str] = DEFAULT_NULLS,
    columns: Sequence[dict[str, str]] | None = None,
    on_error: str = "fail",
) -> dict[str, Any]:
    """Import an uploaded CSV file into a dataset (create, append or replace)."""
    began = time.monotonic()
    stage = sql.staging_name(ctx.task_id)
    state = dict(ctx.state)
    if state.get("published") and "result" in state:  # stopped after its last commit
        _discard_upload(ctx, upload)
        return dict(state["result"])
    try:
        path = _upload_file(_upload(ctx, upload))
        if not path.exists():
            raise DataError(f"the file of upload {upload} is gone")
        with Source(path, delimiter) as src:
            if "columns" not in state:  # first run: plan, then create the staging table
                planned, data_at, row_bytes = _plan(
                    ctx,
                    src,
                    dataset=dataset,
                    mode=mode,
                    header=header,
                    columns=columns,
                    nulls=null_values,
                )
                state = {
                    "columns": planned,
                    "consumed": 0,
                    "loaded": 0,
                    "skipped": [],
                    "skipped_count": 0,
                    "upload": upload,
                    "mode": mode,
                    "header": header,
                    "offset": data_at.offset,
                    "line": data_at.line,
                    "data_offset": data_at.offset,
                    "row_bytes": row_bytes,
                    "key": "deferred",
                }
                with ctx.atomic(state):
                    sql.drop_table(stage)
                    sql.create_table(stage, planned, key=False)
                src.seek(data_at)  # the sample is loaded with the rest
            elif "offset" in state:  # resumed: continue after what was committed
                src.seek(Mark(state["offset"], state["line"]))
            else:  # resumed from a checkpoint without offsets: parse the way back
                records = src.records()
                for _ in range(state["consumed"] + (1 if state["header"] else 0)):
                    next(records, None)
                state = {**state, "offset": src.offset, "line": src.line, "data_offset": src.start}
            with sql.bulk_load():
                state = Loader(ctx, src, stage, state, null_values, on_error == "skip").run()
        while True:
            try:
                return _publish(
                    ctx,
                    state,
                    dataset=dataset,
                    mode=mode,
                    began=began,
                    loaded=state["loaded"],
                    skipped=state["skipped"],
                    skipped_count=state["skipped_count"],
                )
            except Interrupted:  # a pause or cancel came while the index was built
                ctx.progress(state["loaded"])  # raises it (or, withdrawn: publish again)
    except DataError:
        sql.drop_table(stage)
        _discard_upload(ctx, upload)
        raise


def _publish(
    ctx: TaskContext,
    state: dict[str, Any],
    *,
    dataset: str,
    mode: str,
    began: float,
    loaded: int,
    skipped: list[dict[str, Any]],
    skipped_count: int,
) -> dict[str, Any]:
    owner_id = task_owner(ctx)
    stage = sql.staging_name(ctx.task_id)
    columns = state["columns"]
    now = timezone.now()
    final = {**state, "published": True}
    try:
        with ctx.atomic(final):
            existing = (
                Dataset.objects.select_for_update().filter(owner_id=owner_id, name=dataset).first()
            )
            if existing is not None:  # what an undo needs (see _unpublish)
                final["before"] = {
                    "table": existing.table,
                    "columns": existing.columns,
                    "row_count": existing.row_count,
                    "last_import_at": (
                        existing.last_import_at.isoformat() if existing.last_import_at else None
                    ),
                    "last_import_task_id": existing.last_import_task_id,
                }
            if mode == "append":
                if existing is None:
                    raise DataError(f"dataset {dataset!r} was deleted during the import")
                after = sql.max_key(existing.table)
                sql.append(stage, existing.table, columns, ctx.should_stop)
                sql.drop_table(stage)
                final["before"].update(rows_after=after, rows_upto=sql.max_key(existing.table))
                existing.row_count = sql.count(existing.table)
                target = existing
            else:
                if mode == "create" and existing is not None:
                    raise DataError(f"dataset {dataset!r} was created meanwhile")
                table = sql.new_table_name()
                sql.rename(stage, table)
                if state.get("key") == "deferred":
                    sql.add_key(table, ctx.should_stop)
                if existing is not None:  # replace: the old table is dropped later
                    retired = retired_name(ctx.task_id)
                    sql.drop_table(retired)
                    sql.rename(existing.table, retired)
                    final["before"]["retired"] = retired
                    existing.table, existing.columns = table, columns
                    target = existing
                else:
                    target = Dataset(owner_id=owner_id, name=dataset, table=table, columns=columns)
                target.row_count = loaded
            target.last_import_at = now
            target.last_import_task_id = ctx.task_id
            target.save()
            final["dataset_id"] = target.pk
            final["result"] = {
                "dataset": dataset,
                "mode": mode,
                "rows": loaded,
                "columns": target.columns,  # (an append's file may order them otherwise)
                "skipped_count": skipped_count,
                "skipped_lines": skipped,
                "seconds": round(time.monotonic() - began, 3),
            }
    except IntegrityError:
        raise DataError(f"dataset {dataset!r} was created meanwhile") from None
    _discard_upload(ctx, state["upload"])
    return dict(final["result"])
