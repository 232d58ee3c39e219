"""``import_csv`` and ``export_csv``: the datasets' import and export as pipeline steps.

They run the very code of ``csv_import`` and ``csv_export`` (batches committed with
their checkpoint, pause and resume, exactly once, rollback), only their file comes
from, or goes to, the pipeline:

- ``import_csv`` imports the file its input names (a ``fetch`` output, an export, or
  a path relative to TETHER_DATA_DIR inside the owner's own areas: see
  ``areas.owned_file``). The file is linked into the uploads directory as an upload of
  the owner's, recorded in the step's first checkpoint, and imported from there as an
  upload from the API would be. Its rollback undoes the import.
- ``export_csv`` exports a dataset (its ``dataset`` param, or the one its input names,
  e.g. an ``import_csv`` output) or a date range of it, into the exports directory; the
  file is downloaded like any export (GET /api/v1/tasks/{id}/download). Its rollback
  deletes the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.context import TaskContext
from tether.datasets import exporter, importer
from tether.datasets.errors import CellError, DataError, DatasetNotFound
from tether.datasets.files import data_dir, export_path
from tether.datasets.types import clean_names
from tether.exceptions import InvalidParams
from tether.models import Dataset, Upload, new_upload_id
from tether.registry import task
from tether.tasks import areas

_IMPORT: dict[str, Any] = importer.PARAMS  # (typed: the schemas are plain dicts)
_EXPORT: dict[str, Any] = exporter.PARAMS
IMPORT_PARAMS: dict[str, Any] = {
    **_IMPORT,
    "properties": {k: v for k, v in _IMPORT["properties"].items() if k != "upload"},
    "required": ["dataset"],
}
EXPORT_PARAMS: dict[str, Any] = {
    **_EXPORT,
    "properties": {
        **_EXPORT["properties"],
        "dataset": {
            **_EXPORT["properties"]["dataset"],
            "description": "dataset to export (default: the one the step's input names)",
        },
        "date_column": {
            "type": "string",
            "description": "column for from_date/to_date (default: the dataset's only "
            "date or timestamp column)",
        },
    },
    "required": [],
}


def _check_import(params: dict[str, Any]) -> None:
    """On submit, what POST /api/v1/datasets/import checks beyond the schema."""
    if params["dataset"].lower() in importer.RESERVED_NAMES:
        raise InvalidParams(
            f"params.dataset: {params['dataset']!r} is a reserved name", field="dataset"
        )
    if params["delimiter"] in '"\r\n':
        raise InvalidParams(
            "params.delimiter: one character other than a quote or a line break",
            field="delimiter",
        )
    if params.get("columns"):
        try:
            clean_names([c["name"] for c in params["columns"]])
        except CellError as exc:
            raise InvalidParams(f"params.columns: {exc}", field="columns") from None


def _undo_import(ctx: TaskContext) -> None:
    """Rollback: the dataset is as it was before the import."""
    importer.drop_staging(ctx)


@task(
    name="import_csv",
    queue="data",
    rollback=_undo_import,
    params=IMPORT_PARAMS,
    check=_check_import,
    description="Import the CSV file the step's input names (a fetch output, an export "
    "or a path inside your own area of TETHER_DATA_DIR) into a dataset: create, append "
    "or replace, with the options of POST /api/v1/datasets/import. Output: the "
    "import's result {dataset, mode, rows, columns, ...}. Cancel undoes the import.",
)
def import_csv(
    ctx: TaskContext,
    *,
    dataset: str,
    mode: str = "create",
    delimiter: str = ",",
    header: bool = True,
    null_values: Sequence[str] = importer.DEFAULT_NULLS,
    columns: Sequence[dict[str, str]] | None = None,
    on_error: str = "fail",
) -> dict[str, Any]:
    upload = ctx.state.get("upload")
    if upload is None:
        name = areas.input_path(ctx.input, step="import_csv")
        source = areas.owned_file(ctx, name, step="import_csv")
        upload = new_upload_id()
        stored = f"{upload}.csv"
        areas.link_or_copy(source, data_dir("uploads") / stored)
        with ctx.atomic({"upload": upload, "source": name}):
            Upload.objects.create(
                public_id=upload,
                owner_id=areas.owner_of(ctx),
                path=stored,
                original_name=source.name,
                size=source.stat().st_size,
            )
    return importer.csv_import(
        ctx,
        upload=upload,
        dataset=dataset,
        mode=mode,
        delimiter=delimiter,
        header=header,
        null_values=null_values,
        columns=columns,
        on_error=on_error,
    )


def _dataset_of(ctx: TaskContext, dataset: str | None) -> str:
    if dataset:
        return dataset
    value = ctx.input
    if isinstance(value, dict) and isinstance(value.get("dataset"), str):
        return str(value["dataset"])
    raise DataError(
        "export_csv needs a dataset: its dataset param, or as its input a previous "
        "step's output naming one (e.g. import_csv's)"
    )


def _date_column(owner_id: int, dataset: str) -> str:
    """The dataset's only date or timestamp column (for a range without date_column)."""
    ds = Dataset.objects.filter(owner_id=owner_id, name=dataset).first()
    if ds is None:
        raise DatasetNotFound(f"no dataset {dataset!r}")
    dates = [c["name"] for c in ds.columns if c["type"] in exporter.DATE_TYPES]
    if len(dates) != 1:
        raise DataError(
            f"from_date/to_date need date_column: dataset {dataset!r} has "
            + (f"{len(dates)} date columns ({', '.join(dates)})" if dates else "no date column")
        )
    return dates[0]


def _check_export(params: dict[str, Any]) -> None:
    """On submit, the date range as POST /api/v1/datasets/{name}/export checks it."""
    try:
        exporter.date_range(params.get("from_date"), params.get("to_date"))
    except DataError as exc:
        raise InvalidParams(exc.message, field=exc.extra.get("field")) from None


def _delete_export(ctx: TaskContext) -> None:
    """Rollback: the export file (or its partial file) is deleted."""
    final = export_path(areas.origin_task_id(ctx))
    for path in (final, final.with_name(final.name + ".part")):
        path.unlink(missing_ok=True)


@task(
    name="export_csv",
    queue="data",
    rollback=_delete_export,
    params=EXPORT_PARAMS,
    check=_check_export,
    description="Export a dataset (its dataset param, or the one the step's input "
    "names, e.g. import_csv's output), or a date range of it, to a CSV file. Output: "
    "{path (relative to TETHER_DATA_DIR), dataset, rows, bytes, task}; download the "
    "file with GET /api/v1/tasks/{task}/download. Cancel deletes the file.",
)
def export_csv(
    ctx: TaskContext,
    *,
    dataset: str | None = None,
    columns: list[str] | None = None,
    date_column: str | None = None,
    from_date: str | None = None,
    to_date: str | None = None,
    raw: bool = False,
) -> dict[str, Any]:
    name = _dataset_of(ctx, dataset)
    if (from_date or to_date) and not date_column:
        date_column = _date_column(areas.owner_of(ctx), name)
    result = exporter.csv_export(
        ctx,
        dataset=name,
        columns=columns,
        date_column=date_column,
        from_date=from_date,
        to_date=to_date,
        raw=raw,
    )
    return {
        "path": areas.relative(export_path(ctx.task_id)),
        "dataset": name,
        "rows": result["rows"],
        "bytes": result["bytes"],
        "task": ctx.task_id,
        "from_date": from_date,
        "to_date": to_date,
    }
