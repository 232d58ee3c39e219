"""``GET /api/v1/events`` in the OpenAPI document.

The event stream is served by an async handler in the ASGI application
(``tether.server.sse``), not by a DRF view, so drf-spectacular cannot see it: this
postprocessing hook writes its entry, with the same Error schema and statuses as the
REST operations, and the three kinds of event as schemas.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from tether.api.schema import NOT_BLANK, UNAUTHORIZED
from tether.states import Status

PATH = "/api/v1/events"
ITEM = "(?:[0-9]{1,18}|mine|all)"
TASKS_PATTERN = f"^{ITEM}(?:,{ITEM})*$"
ID_PATTERN = "^[0-9]{1,18}$"
PIPELINES_PATTERN = "^[0-9]{1,18}(?:,[0-9]{1,18})*$"

DESCRIPTION = """\
Task and pipeline events as [Server-Sent Events](https://html.spec.whatwg.org/multipage/server-sent-events.html)
(`text/event-stream`), for `curl -N` and the browser's `EventSource`. The stream stays open:

- a status change: `id: <event id>`, `event: status`, `data: <StreamStatusEvent JSON>`;
- progress (at most 5 a second per task, the latest figures): `event: progress`,
  `data: <StreamProgressEvent JSON>`, no `id:`;
- a pipeline's status change (to its owner's `mine`, to `all`, and to `pipelines`
  that name it): `event: pipeline`, `data: <StreamPipelineEvent JSON>`, no `id:`;
- first `retry: 2000` and `id: <where the stream starts>`, so a client cut off before
  its first event resumes without a gap; `: ping` after 20 s without an event.

Resume with the `Last-Event-ID` header (EventSource sends it when it reconnects) or
`since`: every stored status event after that id comes first, then live ones, none
missed and none twice (a pipeline's own events are not replayed: read the pipeline
again). A client that reads too slowly has its stream ended; it resumes
the same way, as after a server restart. Authenticate with the token header or the
browser's session cookie (checked again every minute: the stream ends when it no longer
stands); every error is answered as JSON before the stream starts."""

STATUS_EVENT = {
    "type": "object",
    "description": "a committed status change (the task's history, GET /tasks/{id}/events)",
    "properties": {
        "kind": {"type": "string", "enum": ["status"]},
        "id": {"type": "integer", "description": "the event id: resume after it"},
        "task": {"type": "integer"},
        "owner": {"type": "string"},
        "task_type": {"type": "string"},
        "from": {"type": ["string", "null"], "enum": [s.value for s in Status] + [None]},
        "to": {"type": "string", "enum": [s.value for s in Status]},
        "at": {"type": ["string", "null"], "format": "date-time"},
        "actor": {"type": "string"},
        "reason": {"type": "string"},
        "pipeline": {
            "type": ["integer", "null"],
            "description": "the pipeline the task is a step (or an undo) of",
        },
    },
    "required": [
        "kind",
        "id",
        "task",
        "owner",
        "task_type",
        "from",
        "to",
        "at",
        "actor",
        "pipeline",
    ],
}
PROGRESS_EVENT = {
    "type": "object",
    "description": "a task's latest progress figures (not stored, not replayed)",
    "properties": {
        "kind": {"type": "string", "enum": ["progress"]},
        "id": {"type": "null"},
        "task": {"type": "integer"},
        "owner": {"type": "string"},
        "task_type": {"type": "string"},
        "progress": {
            "type": "object",
            "description": "done, total, unit, percent, rate, eta_seconds, message",
        },
    },
    "required": ["kind", "id", "task", "owner", "task_type", "progress"],
}
PIPELINE_EVENT = {
    "type": "object",
    "description": "a committed status change of a pipeline (GET /pipelines/{id}/events); "
    "not replayed",
    "properties": {
        "kind": {"type": "string", "enum": ["pipeline"]},
        "id": {"type": "null"},
        "pipeline": {"type": "integer"},
        "owner": {"type": "string"},
        "name": {"type": "string"},
        "from": {"type": ["string", "null"], "enum": [s.value for s in Status] + [None]},
        "to": {"type": "string", "enum": [s.value for s in Status]},
        "at": {"type": "string", "format": "date-time"},
        "actor": {"type": "string"},
        "reason": {"type": "string"},
        "event": {"type": "integer", "description": "its id in the pipeline's history"},
        "tasks": {
            "type": "array",
            "items": {"type": "integer"},
            "description": "the tasks of the steps it started (on submission), else empty",
        },
    },
    "required": ["kind", "id", "pipeline", "owner", "name", "from", "to", "at", "event", "tasks"],
}


def error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


OPERATION = {
    "operationId": "api_v1_events_stream",
    "summary": "Follow task events (Server-Sent Events)",
    "description": DESCRIPTION,
    "tags": ["events"],
    "security": [{"TokenAuth": []}, {"SessionCookie": []}],
    "parameters": [
        {
            "in": "query",
            "name": "tasks",
            "description": "comma-separated task ids (at most 1,000), `mine` (your tasks, "
            "also those created later; the default) or `all` (staff only)",
            "schema": {"type": "string", "pattern": TASKS_PATTERN},
            "examples": {"ids": {"value": "7,8"}, "mine": {"value": "mine"}},
        },
        {
            "in": "query",
            "name": "pipelines",
            "description": "comma-separated pipeline ids (at most 1,000, yours; staff: "
            "anyone's): their own events and every event of their steps' tasks, also "
            "those started later. Without `tasks`, only these",
            "schema": {"type": "string", "pattern": PIPELINES_PATTERN},
            "examples": {"ids": {"value": "3,4"}},
        },
        {
            "in": "query",
            "name": "since",
            "description": "resume after this event id (the Last-Event-ID header wins)",
            "schema": {"type": "integer", "minimum": 0},
        },
        {
            "in": "header",
            "name": "Last-Event-ID",
            "description": "resume after this event id (what EventSource sends)",
            "schema": {"type": "string", "pattern": ID_PATTERN},
        },
    ],
    "responses": {
        "200": {
            "description": "the stream (open until the client leaves, the server stops, "
            "or the client falls too far behind)",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string", "pattern": NOT_BLANK},
                    "example": 'retry: 2000\nid: 57\n\nid: 58\nevent: status\ndata: {"kind":'
                    '"status","id":58,"task":7,"owner":"alice","task_type":"countdown",'
                    '"from":"queued","to":"running","at":"2026-01-01T12:00:00.000000Z",'
                    '"actor":"worker:embedded-1","reason":"claimed","pipeline":null}\n\n',
                }
            },
        },
        "400": error(
            "a bad `tasks` (not ids, `mine` or `all`; more than 1,000 ids), `pipelines`, "
            "`since` or `Last-Event-ID`; or a Host header the server does not answer to"
        ),
        "401": error(UNAUTHORIZED + " (or an ended session)"),
        "403": error(
            "`tasks=all` by a user who is not staff, or an `Origin` of another site "
            "(TETHER_ALLOWED_ORIGINS)"
        ),
        "404": error("a task or pipeline that does not exist or is another user's (`not_found`)"),
        "405": error("a method other than GET"),
        "429": error("the user already has 64 open event streams (`too_many_streams`)"),
    },
}


def document_event_stream(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: add the event stream's operation and schemas."""
    result.setdefault("paths", {})[PATH] = {"get": OPERATION}
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(
        StreamStatusEvent=STATUS_EVENT,
        StreamProgressEvent=PROGRESS_EVENT,
        StreamPipelineEvent=PIPELINE_EVENT,
    )
    components.setdefault("securitySchemes", {})["SessionCookie"] = {
        "type": "apiKey",
        "in": "cookie",
        "name": settings.SESSION_COOKIE_NAME,
        "description": "the Django session of a browser logged in at /admin/login/",
    }
    return result
