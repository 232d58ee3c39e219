"""Datasets API: CSV upload into a ``csv_import`` task, the datasets a user owns (list,
show, preview rows, delete), ``csv_export`` of a dataset and the download of its file.

Datasets are per user: another user's dataset answers 404, for staff too (names are
only unique per owner). Table names are server-generated, never taken from input.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.db import DatabaseError, connection, transaction
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tether import service
from tether.api import serializers as s
from tether.api.schema import BROKER_DOWN
from tether.api.uploads import FIELD, FRAMING_SLACK, DiskUploadHandler, StoredFile
from tether.datasets import checks, exporter, importer, sql, sweep
from tether.datasets.files import DatasetNotFound, export_path
from tether.datasets.types import TYPES, CellError, clean_names
from tether.exceptions import TaskNotFound, TetherError
from tether.models import Dataset, Task, Upload
from tether.states import FINAL, Status

TAGS = ["datasets"]
MODES = ("create", "append", "replace")
RESERVED_NAMES = frozenset({"import"})  # /datasets/import is the upload endpoint
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t"}
MAX_PREVIEW_ROWS = 1000
MAX_OFFSET = 2**63 - 1  # what a database takes as OFFSET (larger: OverflowError, a 500)
DATASET_TASK_TYPES = ("csv_import", "csv_export")
UNFINISHED = [st.value for st in Status if st not in FINAL]


class TooLarge(TetherError):
    code = "too_large"
    http_status = 413
    default_message = "The upload is larger than the server accepts."


class LengthRequired(TetherError):
    code = "length_required"
    http_status = 411
    default_message = "Send the upload with a Content-Length header (not chunked)."


class DatasetExists(TetherError):
    code = "dataset_exists"
    http_status = 409
    default_message = "A dataset of that name exists already."


class DatasetBusy(TetherError):
    code = "dataset_busy"
    http_status = 409
    default_message = "An import or export of the dataset is not finished."


# -- serializers ---------------------------------------------------------------------


class DatasetSerializer(serializers.ModelSerializer[Dataset]):
    columns = serializers.JSONField(
        help_text='[{"name": …, "type": integer|float|boolean|date|timestamp|timestamptz|text}, …]'
    )

    class Meta:
        model = Dataset
        fields = [
            "name",
            "columns",
            "row_count",
            "created_at",
            "last_import_at",
            "last_import_task",
        ]
        read_only_fields = fields


class ImportFormSerializer(serializers.Serializer[Any]):
    """The multipart form of POST /datasets/import."""

    file = serializers.FileField(help_text="the CSV file (UTF-8; a BOM is fine)")
    dataset = serializers.RegexField(
        importer.NAME_PATTERN,
        max_length=64,
        help_text="dataset name: 1-64 letters, digits, '_' and '-', starting with a letter "
        "or digit",
        error_messages={
            "invalid": "use 1-64 letters, digits, '_' and '-', starting with a letter or digit"
        },
    )
    mode = serializers.ChoiceField(
        MODES,
        default="create",
        help_text="create (must not exist), append (must exist, same columns) or replace",
    )
    delimiter = serializers.CharField(
        default=",",
        trim_whitespace=False,
        max_length=3,
        help_text="one character; `tab` or `\\t` for tab",
    )
    header = serializers.BooleanField(
        default=True, help_text="the first line holds the column names"
    )
    null_values = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text='cells read as null: a JSON list (["", "NA"]) or comma-separated '
        '(",NA,NULL"); default "", NA, NULL',
    )
    columns = serializers.CharField(
        required=False,
        help_text="declared columns instead of inferred ones: a JSON list "
        'of {"name": …, "type": …}, one per column of the file',
    )
    on_error = serializers.ChoiceField(
        ("fail", "skip"),
        default="fail",
        help_text="a bad row fails the import, or is skipped (and reported)",
    )

    def validate_dataset(self, value: str) -> str:
        if value.lower() in RESERVED_NAMES:
            raise serializers.ValidationError(f"{value!r} is a reserved name")
        return value

    def validate_delimiter(self, value: str) -> str:
        value = DELIMITER_ALIASES.get(value.lower(), value)
        if len(value) != 1 or value in '"\r\n':
            raise serializers.ValidationError(
                "one character other than a quote or a line break ('tab' for a tab)"
            )
        return value

    def validate_null_values(self, value: str) -> list[str]:
        if value.lstrip().startswith("["):
            try:
                parsed = json.loads(value)
            except ValueError:
                raise serializers.ValidationError("not a valid JSON list") from None
            if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
                raise serializers.ValidationError("a JSON list of strings")
            return parsed
        return value.split(",")

    def validate_columns(self, value: str) -> list[dict[str, str]]:
        try:
            parsed = json.loads(value)
        except ValueError:
            raise serializers.ValidationError(
                'not valid JSON; use [{"name": "id", "type": "integer"}, …]'
            ) from None
        if not isinstance(parsed, list) or not parsed:
            raise serializers.ValidationError('a non-empty JSON list of {"name", "type"}')
        for i, col in enumerate(parsed, start=1):
            if not (
                isinstance(col, dict)
                and set(col) == {"name", "type"}
                and isinstance(col["name"], str)
            ):
                raise serializers.ValidationError(
                    f'column {i}: an object with exactly "name" and "type"'
                )
            if col["type"] not in TYPES:
                raise serializers.ValidationError(
                    f"column {i}: type {col['type']!r} is not one of {', '.join(TYPES)}"
                )
        try:
            clean_names([c["name"] for c in parsed])
        except CellError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return parsed


class ExportSerializer(serializers.Serializer[Any]):
    columns = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        allow_empty=False,
        min_length=1,
        max_length=1000,
        help_text="columns to export, in this order (default: all)",
    )
    date_column = serializers.CharField(
        required=False, help_text="a date or timestamp column for the range"
    )
    from_date = serializers.DateField(
        required=False, input_formats=["iso-8601"], help_text="first day included (YYYY-MM-DD)"
    )
    to_date = serializers.DateField(
        required=False, input_formats=["iso-8601"], help_text="last day included (YYYY-MM-DD)"
    )
    raw = serializers.BooleanField(
        required=False,
        default=False,
        help_text="do not neutralise cells that look like spreadsheet formulas",
    )


class RowsQuerySerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_PREVIEW_ROWS, default=100)
    offset = serializers.IntegerField(min_value=0, max_value=MAX_OFFSET, default=0)


# -- helpers -------------------------------------------------------------------------


def owned(request: Request, name: str) -> Dataset:
    """The caller's dataset ``name``; another user's answers 404 like a missing one."""
    ds = Dataset.objects.filter(owner=cast(Any, request.user), name=name).first()
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


PREVIEW_CELL_CHARS = 1000  # a longer text cell is cut to this many characters + "…"
PREVIEW_BYTES = 1 << 20  # a page stops once its cells add up to about this (1 row at least)
FETCH_BYTES = 8 << 20  # at most this much (worst case) is fetched from the database at once


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


def content_length(request: Request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


def size_text(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


NAME_PARAM = OpenApiParameter("name", str, OpenApiParameter.PATH, description="dataset name")
ERRORS = {
    400: OpenApiResponse(description="invalid input (the error names the field)"),
    404: OpenApiResponse(description="no such dataset (or another user's)"),
}

# -- views ---------------------------------------------------------------------------


class DatasetImportView(APIView):
    """POST /datasets/import: the upload is streamed to disk (never held in memory),
    checked, and handed to a ``csv_import`` task; answers 201 with the task."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        request={"multipart/form-data": ImportFormSerializer},
        responses={
            201: s.TaskSerializer,
            400: ERRORS[400],
            404: OpenApiResponse(description="mode append: no such dataset"),
            409: OpenApiResponse(description="mode create: the dataset exists"),
            411: OpenApiResponse(description="chunked upload: send a Content-Length"),
            413: OpenApiResponse(description="the file is over TETHER_MAX_UPLOAD_BYTES"),
            503: OpenApiResponse(description=BROKER_DOWN),
        },
        tags=TAGS,
        summary="Upload a CSV file and import it into a dataset",
    )
    def post(self, request: Request) -> Response:
        limit = cast(int, settings.TETHER["MAX_UPLOAD_BYTES"])
        too_large = TooLarge(
            f"the file is larger than this server accepts "
            f"({size_text(limit)}, TETHER_MAX_UPLOAD_BYTES)",
            limit=limit,
        )
        length = content_length(request)
        if length is None and request.META.get("HTTP_TRANSFER_ENCODING"):
            raise LengthRequired()
        if length is not None and length > limit + FRAMING_SLACK:
            raise too_large  # refused before reading the body
        handler = DiskUploadHandler(limit)
        request._request.upload_handlers = [handler]
        kept = False
        try:
            try:
                data = request.data
            except (RequestDataTooBig, TooManyFieldsSent):
                raise serializers.ValidationError(
                    {"non_field_errors": ["too many or too large form fields"]}
                ) from None
            except SuspiciousOperation as exc:
                raise serializers.ValidationError({"non_field_errors": [str(exc)]}) from None
            if handler.too_large:
                raise too_large
            form = ImportFormSerializer(data=data)
            form.is_valid(raise_exception=True)
            if handler.stored is None:  # e.g. a text field named "file"
                raise serializers.ValidationError({FIELD: ["no file was submitted"]})
            task = self._submit(request, form.validated_data, handler.stored)
            kept = True
        finally:
            if not kept:
                handler.discard()
        return Response(s.TaskSerializer(task).data, status=status.HTTP_201_CREATED)

    def _submit(self, request: Request, data: dict[str, Any], stored: StoredFile) -> Task:
        name, mode = data["dataset"], data["mode"]
        existing = Dataset.objects.filter(owner=cast(Any, request.user), name=name).first()
        if mode == "create" and existing is not None:
            raise DatasetExists(
                f"dataset {name!r} exists already; use mode append or replace, or another name"
            )
        if mode == "append" and existing is None:
            raise DatasetNotFound(f"no dataset {name!r} to append to; use mode create")
        checks.check_upload(  # 400 not_text, columns_mismatch, bad_data: no task
            stored.path,
            dataset=name,
            delimiter=data["delimiter"],
            header=data["header"],
            declared=data.get("columns"),
            append_to=existing.columns if mode == "append" and existing is not None else None,
        )
        params: dict[str, Any] = {
            "dataset": name,
            "mode": mode,
            "delimiter": data["delimiter"],
            "header": data["header"],
            "on_error": data["on_error"],
        }
        for key in ("null_values", "columns"):
            if key in data:
                params[key] = data[key]
        with transaction.atomic():  # the upload row and the task, or neither
            upload = Upload.objects.create(
                owner=cast(Any, request.user),
                path=stored.path.name,
                original_name=(stored.name or "")[:255],
                size=stored.size or 0,
            )
            return service.submit(
                request.user, "csv_import", {"upload": upload.public_id, **params}
            )


class DatasetListView(APIView):
    @extend_schema(
        responses={200: DatasetSerializer(many=True)}, tags=TAGS, summary="Your datasets, by name"
    )
    def get(self, request: Request) -> Response:
        qs = Dataset.objects.filter(owner=cast(Any, request.user)).order_by("name")
        return Response(DatasetSerializer(qs, many=True).data)


class DatasetDetailView(APIView):
    @extend_schema(
        parameters=[NAME_PARAM],
        responses={200: DatasetSerializer, 404: ERRORS[404]},
        tags=TAGS,
        summary="One dataset: columns with types, row count, last import",
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(DatasetSerializer(owned(request, name)).data)

    @extend_schema(
        parameters=[NAME_PARAM],
        responses={
            204: None,
            404: ERRORS[404],
            409: OpenApiResponse(description="an import or export of it is not finished"),
        },
        tags=TAGS,
        summary="Delete a dataset and its table",
    )
    def delete(self, request: Request, name: str) -> Response:
        owned(request, name)
        busy = unfinished_tasks(request.user, name)
        if busy:
            raise DatasetBusy(
                f"task(s) {', '.join(map(str, busy))} (import/export of "
                f"{name!r}) not finished; wait for them or cancel them first",
                tasks=busy,
            )
        with transaction.atomic():  # the row and its table go together (not on MySQL,
            ds = (
                Dataset.objects.select_for_update()  # whose DDL commits by itself)
                .filter(owner=cast(Any, request.user), name=name)
                .first()
            )
            if ds is None:
                raise DatasetNotFound(f"no dataset {name!r}")
            ds.delete()
            sql.drop_table(ds.table)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DatasetRowsView(APIView):
    @extend_schema(
        parameters=[NAME_PARAM, RowsQuerySerializer],
        responses={
            200: OpenApiResponse(
                description='{"dataset", "columns", "row_count", "offset", '
                '"limit", "rows": [[cell, …], …], "truncated"}: text cells over '
                f"{PREVIEW_CELL_CHARS} characters end in …, and a page stops at about "
                f"{PREVIEW_BYTES >> 20} MiB of cells (truncated: true; page on from "
                "offset + len(rows))"
            ),
            404: ERRORS[404],
        },
        tags=TAGS,
        summary="Preview rows, in import order",
    )
    def get(self, request: Request, name: str) -> Response:
        query = RowsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit, offset = query.validated_data["limit"], query.validated_data["offset"]
        ds = owned(request, name)
        try:
            rows, truncated = read_rows(ds, limit, offset)
        except DatabaseError:  # replaced (new table) or deleted between lookup and read
            ds = owned(request, name)
            rows, truncated = read_rows(ds, limit, offset)
        return Response(
            {
                "dataset": ds.name,
                "columns": ds.columns,
                "row_count": ds.row_count,
                "offset": offset,
                "limit": limit,
                "rows": rows,
                "truncated": truncated,
            }
        )


class DatasetExportView(APIView):
    @extend_schema(
        parameters=[NAME_PARAM],
        request=ExportSerializer,
        responses={
            201: s.TaskSerializer,
            400: ERRORS[400],
            404: ERRORS[404],
            503: OpenApiResponse(description=BROKER_DOWN),
        },
        tags=TAGS,
        summary="Export a dataset (or a date range of it) to CSV",
    )
    def post(self, request: Request, name: str) -> Response:
        body = ExportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        params: dict[str, Any] = {"dataset": name, "raw": data["raw"]}
        for key in ("columns", "date_column"):
            if key in data:
                params[key] = data[key]
        for key in ("from_date", "to_date"):
            if key in data:
                params[key] = data[key].isoformat()
        exporter.plan(
            cast(int, request.user.pk),
            name,
            params.get("columns"),  # 400, 404
            params.get("date_column"),
            params.get("from_date"),
            params.get("to_date"),
        )
        task = service.submit(request.user, "csv_export", params)
        return Response(s.TaskSerializer(task).data, status=status.HTTP_201_CREATED)


class CsvFile(FileResponse):
    block_size = 256 * 1024


class TaskDownloadView(APIView):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)  # any Accept

    @extend_schema(
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            404: OpenApiResponse(
                description="no such task, not a csv_export, or not succeeded (yet)"
            ),
        },
        tags=TAGS,
        summary="Download the file of a succeeded csv_export task",
    )
    def get(self, request: Request, pk: int) -> FileResponse:
        # An export holds a dataset's rows: per user like datasets, for staff too.
        task = Task.objects.filter(pk=pk, owner=cast(Any, request.user)).first()
        if task is None:
            raise TaskNotFound(f"no task {pk}")
        if task.type != "csv_export":
            raise TaskNotFound(
                f"task {pk} is a {task.type} task; only csv_export tasks have a file to download"
            )
        if task.status != Status.SUCCEEDED:
            raise TaskNotFound(
                f"task {pk} is {task.status}; its file can be downloaded once it has succeeded",
                status=task.status,
            )
        try:
            handle = open(export_path(pk), "rb")  # noqa: SIM115 - FileResponse closes it
        except FileNotFoundError:
            days = sweep.export_ttl() / 86400
            raise TaskNotFound(
                f"the file of task {pk} is gone (export files are deleted "
                f"{days:g} days after they are written)"
            ) from None
        dataset = str((task.params or {}).get("dataset") or "export")
        if not re.fullmatch(importer.NAME_PATTERN, dataset):
            dataset = "export"
        return CsvFile(
            handle,
            as_attachment=True,
            filename=f"{dataset}-{pk}.csv",
            content_type="text/csv; charset=utf-8",
        )
