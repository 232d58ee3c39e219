"""Datasets API: CSV upload into a ``csv_import`` task, the datasets a user owns (list,
show, preview rows, delete), ``csv_export`` of a dataset and the download of its file.

The views keep to HTTP: they stream the upload to disk, validate forms and query
strings, call ``tether.datasets.service`` (the queries and transactions, which decide
per user: another user's dataset answers 404, for staff too) and shape the answers.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tether.api import serializers as s
from tether.api.schema import BROKER_DOWN
from tether.api.uploads import FIELD, FRAMING_SLACK, DiskUploadHandler, StoredFile
from tether.datasets import importer
from tether.datasets import service as datasets
from tether.datasets.errors import CellError, LengthRequired, UploadTooLarge
from tether.datasets.files import size_text
from tether.datasets.service import PREVIEW_BYTES, PREVIEW_CELL_CHARS
from tether.datasets.types import TYPES, clean_names
from tether.models import Dataset, Task

TAGS = ["datasets"]
MODES = ("create", "append", "replace")
RESERVED_NAMES = importer.RESERVED_NAMES
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t"}
MAX_PREVIEW_ROWS = 1000
MAX_OFFSET = 2**63 - 1  # what a database takes as OFFSET (larger: OverflowError, a 500)


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
        trim_whitespace=False,
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
        trim_whitespace=False, required=False, help_text="a date or timestamp column for the range"
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


def content_length(request: Request) -> int | None:
    try:
        return int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None


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
        too_large = UploadTooLarge(
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
        # 409 dataset_exists, 404, 400 not_text, columns_mismatch, bad_data: no task
        return datasets.submit_import(
            request.user, data, stored.path, stored.name or "", stored.size or 0
        )


class DatasetListView(APIView):
    @extend_schema(
        responses={200: DatasetSerializer(many=True)}, tags=TAGS, summary="Your datasets, by name"
    )
    def get(self, request: Request) -> Response:
        qs = datasets.datasets_of(request.user)
        return Response(DatasetSerializer(qs, many=True).data)


class DatasetDetailView(APIView):
    @extend_schema(
        parameters=[NAME_PARAM],
        responses={200: DatasetSerializer, 404: ERRORS[404]},
        tags=TAGS,
        summary="One dataset: columns with types, row count, last import",
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(DatasetSerializer(datasets.owned(request.user, name)).data)

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
        datasets.delete(request.user, name)
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
        return Response(datasets.rows_page(request.user, name, limit, offset))


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
        task = datasets.submit_export(request.user, name, body.validated_data)  # 400, 404
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
        handle, filename = datasets.export_file(request.user, pk)
        return CsvFile(
            handle, as_attachment=True, filename=filename, content_type="text/csv; charset=utf-8"
        )
