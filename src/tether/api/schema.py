"""The OpenAPI document (``/api/schema/``) says every status an operation can answer.

drf-spectacular documents the success responses it sees in a view; the errors come from
code around the view (authentication, throttles, parsers, URL converters, the admission
check of the broker). ``TetherAutoSchema`` adds those to each operation, from what the
view is (authenticated, throttled, takes a body, has path parameters, paginates), with
the one ``Error`` schema, and gives the same schema to errors a view declares with a
description only. Task type names are an enum read from the registry when the document
is generated, so it lists the types of the server that serves it.
"""

from __future__ import annotations

import copy
from typing import Any

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from tether import registry, service
from tether.api.fields import StrictCharField

# Why each automatic status can happen; a view may declare its own wording instead.
BAD_REQUEST = (
    "invalid input: a field, a query parameter, malformed or too deeply nested JSON, "
    "or a Host header the server does not answer to"
)
UNAUTHORIZED = "no token, or an invalid, expired or revoked one"
NOT_FOUND = "no such object (another user's answers the same), or no such page"
TOO_LARGE = "the request body is larger than the server accepts"
UNSUPPORTED = "the body is not of the media type the operation takes (`unsupported_media_type`)"
THROTTLED = "too many attempts from this address; retry after the Retry-After seconds"
NO_NUL = "^[^\\u0000]*$"
# DRF trims strings first: one that is all spaces is blank
NOT_BLANK = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"
BROKER_DOWN = "the message broker cannot be reached; nothing was created (`broker_unavailable`)"


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="stable, machine-readable: `not_found`, `invalid`, …")
    message = serializers.CharField(help_text="one line for people")


class ErrorSerializer(serializers.Serializer[Any]):
    """Every 4xx and 5xx of the API; some errors add fields next to code and message
    (``fields`` for invalid input, ``status`` for a conflict, ``limit`` for too large)."""

    error = ErrorDetailSerializer()


def error(description: str) -> OpenApiResponse:
    """An error response for ``@extend_schema(responses=…)``."""
    return OpenApiResponse(response=ErrorSerializer, description=description)


class TetherAutoSchema(AutoSchema):
    def error_statuses(self) -> dict[int, str]:
        """The errors every view of this kind can answer, whatever its own code does."""
        view: Any = self.view
        found = {400: BAD_REQUEST}  # a bad Host header reaches every operation
        if view.get_authenticators():
            found[401] = UNAUTHORIZED
        if "{" in self.path or (self.method == "GET" and getattr(view, "paginator", None)):
            found[404] = NOT_FOUND
        if self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None:
            found[413] = TOO_LARGE
            found[415] = UNSUPPORTED
        if view.get_throttles():
            found[429] = THROTTLED
        return found

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        """Request strings say they cannot hold NUL (DRF refuses it in every CharField)
        nor be all spaces when they may not be blank."""
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction != "request":
            return schema
        for name, field in serializer.fields.items():
            prop = schema.get("properties", {}).get(name)
            if (
                isinstance(field, serializers.CharField)
                and prop is not None
                and prop.get("type") == "string"
                and not {"pattern", "enum", "format"} & set(prop)
            ):
                blank_ok = field.allow_blank or not field.trim_whitespace
                prop["pattern"] = NO_NUL if blank_ok else NOT_BLANK
        return schema

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for status, description in self.error_statuses().items():
            responses.setdefault(str(status), {"description": description})
        for code, response in responses.items():
            if int(code) >= 400 and not response.get("content"):
                body = self._get_response_for_code(ErrorSerializer, code, direction=direction)
                response["content"] = body["content"]
        return dict(sorted(responses.items()))


class TaskTypeName(StrictCharField):
    """A task type's name: a string here, an enum of the submittable types in the
    document (checked against the registry by the service, with its own message)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)


class TaskTypeNameExtension(OpenApiSerializerFieldExtension):
    target_class = TaskTypeName

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {"type": "string", "enum": [t.name for t in registry.submittable_types()]}


WHOLE = "written as an integer: 1, not 1.0 or 1e0 (JSON Schema would count those)"


def whole_numbers(node: Any) -> None:
    """Say on each ``integer`` in a params schema what the validator takes: JSON Schema
    cannot tell 1.0 from 1, Tether's params check can (and refuses 1.0)."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            text = node.get("description")
            node["description"] = f"{text}; {WHOLE}" if text else WHOLE
        for value in node.values():
            whole_numbers(value)
    elif isinstance(node, list):
        for value in node:
            whole_numbers(value)


def params_variant(ttype: registry.TaskType) -> dict[str, Any]:
    """The ``SubmitRequest`` of one task type: its name and its own params schema."""
    params = copy.deepcopy(ttype.params_schema)
    whole_numbers(params)
    return {
        "title": ttype.name,
        "type": "object",
        "properties": {"type": {"type": "string", "enum": [ttype.name]}, "params": params},
        # params may be left out only when {} is valid for the type
        "required": ["type", "params"] if params.get("required") else ["type"],
    }


# Where the task a 201 answers with can be found: every operation on /tasks/{id} but
# the download, which only a succeeded csv_export has.
TASK_OPS = {
    "GetTask": "api_v1_tasks_retrieve",
    "TaskEvents": "api_v1_tasks_events_list",
    "PauseTask": "api_v1_tasks_pause_create",
    "ResumeTask": "api_v1_tasks_resume_create",
    "CancelTask": "api_v1_tasks_cancel_create",
}
DATASET_OPS = {
    "GetDataset": "api_v1_datasets_retrieve",
    "DatasetRows": "api_v1_datasets_rows_retrieve",
    "ExportDataset": "api_v1_datasets_export_create",
    "DeleteDataset": "api_v1_datasets_destroy",
}
PIPELINE_OPS = {
    "GetPipeline": "api_v1_pipelines_retrieve",
    "PipelineEvents": "api_v1_pipelines_events_list",
    "PausePipeline": "api_v1_pipelines_pause_create",
    "ResumePipeline": "api_v1_pipelines_resume_create",
    "CancelPipeline": "api_v1_pipelines_cancel_create",
    "RetryPipeline": "api_v1_pipelines_retry_create",
}
# (path, method, status): (operations, parameter, where its value is in the answer)
LINKS = {
    ("/api/v1/tasks", "post", "201"): (TASK_OPS, "id", "$response.body#/id"),
    ("/api/v1/datasets/import", "post", "201"): (TASK_OPS, "id", "$response.body#/id"),
    ("/api/v1/datasets/{name}/export", "post", "201"): (TASK_OPS, "id", "$response.body#/id"),
    ("/api/v1/tasks", "get", "200"): (
        {**TASK_OPS, "DownloadFile": "api_v1_tasks_download_retrieve"},
        "id",
        "$response.body#/results/0/id",
    ),
    ("/api/v1/datasets", "get", "200"): (DATASET_OPS, "name", "$response.body#/0/name"),
    ("/api/v1/pipelines", "post", "201"): (PIPELINE_OPS, "id", "$response.body#/id"),
    ("/api/v1/pipelines", "get", "200"): (PIPELINE_OPS, "id", "$response.body#/results/0/id"),
}


def add_links(result: dict[str, Any]) -> None:
    for (path, method, status), (ops, param, value) in LINKS.items():
        response = result["paths"].get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is not None:
            response["links"] = {
                name: {"operationId": op, "parameters": {param: value}} for name, op in ops.items()
            }


# Any JSON the parser takes: no string, and no object key, may hold NUL (no database
# stores it; the request is 400 `bad_text` even where the value would be ignored).
STORABLE_JSON = {
    "description": "any JSON value whose strings and keys hold no NUL",
    "anyOf": [
        {"type": ["number", "boolean", "null"]},
        {"type": "string", "pattern": NO_NUL},
        {"type": "array", "items": {"$ref": "#/components/schemas/StorableJSON"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/StorableJSON"},
        },
    ],
}


def storable_text(result: dict[str, Any]) -> None:
    """Say where NUL is refused: in JSON bodies (keys and extra fields too), and in
    string query and path parameters (``%00`` in a URL is 400)."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["StorableJSON"] = STORABLE_JSON
    for operations in result["paths"].values():
        for operation in operations.values():
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                if schema.get("type") == "string" and not {"pattern", "enum"} & set(schema):
                    schema["pattern"] = NO_NUL
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            ref = (body or {}).get("schema", {}).get("$ref", "")
            component = schemas.get(ref.rsplit("/", 1)[-1]) if ref else None
            if component is not None and "additionalProperties" not in component:
                component["propertyNames"] = {"pattern": NO_NUL}
                component["additionalProperties"] = {"$ref": "#/components/schemas/StorableJSON"}


def any_json(node: Any) -> None:
    """drf-spectacular writes a nullable JSON field as ``oneOf: [{}, {"type": "null"}]``
    in OpenAPI 3.1, which null matches twice (so no value is valid); ``{}`` alone says
    it."""
    if isinstance(node, dict):
        if node.get("oneOf") in ([{}, {"type": "null"}], [{"type": "null"}, {}]):
            del node["oneOf"]
        for value in node.values():
            any_json(value)
    elif isinstance(node, list):
        for value in node:
            any_json(value)


def service_limits(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: what ``service.submit`` checks, in the document (the queue
    name and pause timeout bounds, each task type's params schema), and the links from
    answers that name tasks or datasets to the operations on them."""
    submit = result.get("components", {}).get("schemas", {}).get("SubmitRequest")
    if submit:
        props = submit["properties"]
        props["queue"]["pattern"] = service.QUEUE_RE.pattern
        props["pause_timeout"].update(exclusiveMinimum=0, maximum=service.MAX_PAUSE_TIMEOUT)
        props["params"] = {"type": "object", "description": "as the type's params_schema"}
        submit["oneOf"] = [params_variant(t) for t in registry.submittable_types()]
    add_links(result)
    storable_text(result)
    any_json(result)
    return result
