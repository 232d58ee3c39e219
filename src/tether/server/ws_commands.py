"""Requests of the WebSocket API: what each frame asks, checked, and how it is answered.

A frame is read under REST's JSON rules (size, depth, numbers, NUL) and must carry a
``req`` id; a connection's requests pass a token bucket.

The commands (``submit``, ``pause``, ``resume``, ``cancel``, ``get``, ``list``,
``types``) are answered by the REST API's own views: a request is built in-process
with the connection's user, so fields, rules, error codes and messages are REST's by
construction, not a copy kept in step. Only the task type is named ``task_type`` (a
frame's ``type`` is the request's). Subscriptions (tasks, pipelines) are checked here
against what the user may see, as REST's 404 does for a task of someone else.

Everything that touches the database runs in a thread (``scope_auth.in_db_thread``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django.core.handlers.wsgi import WSGIRequest
from django.http.request import split_domain_port
from django.urls import resolve
from rest_framework.exceptions import APIException, ErrorDetail
from rest_framework.utils.encoders import JSONEncoder

from tether import service
from tether.api.parsers import JSONParser
from tether.pipelines.control import visible as visible_pipelines

log = logging.getLogger("tether.ws")

API = "/api/v1"
MAX_TASKS_PER_REQUEST = 1_000
MAX_TASKS_PER_CONNECTION = 10_000
MAX_ID = 2**63 - 1
MAX_REQ_LENGTH = 100
PARSE_WHEN_THROTTLED = 4096  # a throttled frame is read for its req only when this small


class CommandError(Exception):
    """A request refused before or instead of running: ``{"code", "message", ...}``."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, **extra}


def invalid(name: str, message: str) -> CommandError:
    return CommandError("invalid_params", f"{name}: {message}", field=name)


def encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":"))


def reply(req: Any, data: Any) -> str:
    return encode({"type": "reply", "req": req, "ok": True, "data": data})


def error_reply(req: Any, error: dict[str, Any]) -> str:
    return encode({"type": "reply", "req": req, "ok": False, "error": error})


def task_id(value: Any, name: str = "task", what: str = "task") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise invalid(name, f"give a {what} id (a whole number from 1)")
    return value


def request_id(frame: dict[str, Any]) -> str | int:
    """The client's ``req``: a string or an integer the reply echoes."""
    if "req" not in frame or frame["req"] is None:
        raise CommandError(
            "missing_req", "give each request a 'req' id (a string or a number) for its reply"
        )
    req = frame["req"]
    if isinstance(req, bool) or not isinstance(req, int | str):
        raise CommandError("bad_req", "'req' must be a string or a whole number")
    if isinstance(req, str) and len(req) > MAX_REQ_LENGTH:
        raise CommandError("bad_req", f"'req' must be at most {MAX_REQ_LENGTH} characters")
    if isinstance(req, int) and abs(req) > MAX_ID:
        raise CommandError("bad_req", "'req' must fit in 64 bits")
    return req


# -- frames ------------------------------------------------------------------------------
def frame_error(exc: APIException) -> dict[str, Any]:
    """The {code, message} REST gives a body it cannot parse."""
    detail = exc.detail
    code = detail.code if isinstance(detail, ErrorDetail) else exc.default_code
    return {"code": str(code), "message": str(detail)}


def parse(text: str) -> dict[str, Any]:
    """A request frame under REST's JSON rules (depth, numbers, NUL); raises CommandError."""
    try:
        value = JSONParser().parse(io.BytesIO(text.encode("utf-8", "surrogatepass")))
    except APIException as exc:
        raise CommandError(**frame_error(exc)) from None
    if not isinstance(value, dict):
        raise CommandError("bad_frame", 'a frame is a JSON object: {"type": …, "req": …}')
    return value


def quick_req(text: str) -> Any:
    """The req of a frame not otherwise read (None when it is not cheap to find)."""
    if len(text) > PARSE_WHEN_THROTTLED:
        return None
    with contextlib.suppress(ValueError, RecursionError):
        frame = json.loads(text)
        if isinstance(frame, dict):
            with contextlib.suppress(CommandError):
                return request_id(frame)
    return None


class Bucket:
    """Token bucket: ``rate`` requests a second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> float:
        """0 when a request may run now, else the seconds until it could."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


# -- subscriptions -----------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """What a subscribe or unsubscribe names: task ids, ``mine`` or ``all``, and
    pipeline ids (their own changes and all their tasks' events)."""

    tasks: tuple[int, ...] = ()
    mine: bool = False
    everything: bool = False
    pipelines: tuple[int, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The reply's account of it (``pipelines`` only when it names some)."""
        tasks = "all" if self.everything else "mine" if self.mine else list(self.tasks)
        described: dict[str, Any] = {"tasks": tasks}
        if self.pipelines:
            described["pipelines"] = list(self.pipelines)
        return described


def selection(frame: dict[str, Any]) -> Selection:
    value = frame.get("tasks")
    pipelines = _pipelines(frame.get("pipelines"))
    if (value is None or value == []) and pipelines:
        return Selection(pipelines=pipelines)
    if value == "mine":
        return Selection(mine=True, pipelines=pipelines)
    if value == "all":
        return Selection(everything=True, pipelines=pipelines)
    if not isinstance(value, list) or not value:
        raise invalid("tasks", "give a list of task ids, 'mine' or 'all' (or only 'pipelines')")
    if len(value) > MAX_TASKS_PER_REQUEST:
        raise CommandError(
            "too_many_tasks",
            f"at most {MAX_TASKS_PER_REQUEST:,} task ids a request (got {len(value):,}); "
            "'mine' follows all of yours",
        )
    tasks = tuple(dict.fromkeys(task_id(v, "tasks") for v in value))
    return Selection(tasks=tasks, pipelines=pipelines)


def _pipelines(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not value:
        raise invalid("pipelines", "give a list of pipeline ids")
    if len(value) > MAX_TASKS_PER_REQUEST:
        raise CommandError(
            "too_many_pipelines",
            f"at most {MAX_TASKS_PER_REQUEST:,} pipeline ids a request (got {len(value):,}); "
            "'mine' follows all of yours",
        )
    return tuple(dict.fromkeys(task_id(v, "pipelines", "pipeline") for v in value))


def check_room(tasks: set[int], pipelines: set[int], chosen: Selection) -> None:
    """Raise too_many_tasks (too_many_pipelines) when a connection following ``tasks``
    and ``pipelines`` would follow more than it may with ``chosen`` too."""
    for what, now, more in (
        ("task", tasks, chosen.tasks),
        ("pipeline", pipelines, chosen.pipelines),
    ):
        if len(now | set(more)) > MAX_TASKS_PER_CONNECTION:
            raise CommandError(
                f"too_many_{what}s",
                f"a connection follows at most {MAX_TASKS_PER_CONNECTION:,} {what} ids; "
                "unsubscribe some, or use 'mine'",
            )


def since_of(frame: dict[str, Any]) -> int | None:
    value = frame.get("since")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise invalid("since", "give an event id (a whole number from 0)")
    return value


def check_visible(user: Any, tasks: tuple[int, ...]) -> None:
    """Raise not_found (as REST does) unless ``user`` may see every task (DB thread)."""
    if not tasks:
        return
    seen = set(service.visible_tasks(user).filter(pk__in=tasks).values_list("pk", flat=True))
    missing = [t for t in tasks if t not in seen]
    if missing:
        more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
        raise CommandError("not_found", f"no task {missing[0]}{more}", tasks=missing[:100])


def check_visible_pipelines(user: Any, pipelines: tuple[int, ...]) -> None:
    """Raise not_found unless ``user`` may see every pipeline (DB thread)."""
    if not pipelines:
        return
    seen = set(visible_pipelines(user).filter(pk__in=pipelines).values_list("pk", flat=True))
    missing = [p for p in pipelines if p not in seen]
    if missing:
        more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
        raise CommandError("not_found", f"no pipeline {missing[0]}{more}", pipelines=missing[:100])


# -- commands through the REST views ---------------------------------------------------
@dataclass(frozen=True)
class RestCall:
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    # a REST field named otherwise over the WebSocket: its errors use the frame's name
    renames: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Peer:
    """What a built request needs of the connection (links in a list page, logs)."""

    host: str
    secure: bool
    client: str
    forwarded_proto: str | None = None


COMMAND_FIELDS = ("type", "req")


def _body(frame: dict[str, Any], *skip: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k not in COMMAND_FIELDS and k not in skip}


def _submit(frame: dict[str, Any]) -> RestCall:
    body = _body(frame, "task_type")
    if "task_type" in frame:
        body["type"] = frame["task_type"]
    return RestCall("POST", f"{API}/tasks", body=body, renames={"type": "task_type"})


def _control(action: str) -> Callable[[dict[str, Any]], RestCall]:
    def build(frame: dict[str, Any]) -> RestCall:
        pk = task_id(frame.get("task"))
        return RestCall("POST", f"{API}/tasks/{pk}/{action}", body=_body(frame, "task"))

    return build


def _get(frame: dict[str, Any]) -> RestCall:
    return RestCall("GET", f"{API}/tasks/{task_id(frame.get('task'))}")


def _query_value(name: str, value: Any) -> str:
    if isinstance(value, list) and name == "status":
        if not all(isinstance(v, str) for v in value):
            raise invalid(name, "give status names")
        value = ",".join(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise invalid(name, "give a string or a number")
    text = str(value)
    if "\x00" in text:
        raise CommandError("bad_request", f"{name} holds a NUL character")
    return text


def _list(frame: dict[str, Any]) -> RestCall:
    names = {"status": "status", "task_type": "type", "page": "page", "page_size": "page_size"}
    query = {
        rest: _query_value(ws, frame[ws]) for ws, rest in names.items() if frame.get(ws) is not None
    }
    return RestCall("GET", f"{API}/tasks", query=query)


def _types(frame: dict[str, Any]) -> RestCall:
    return RestCall("GET", f"{API}/task-types")


COMMANDS: dict[str, Callable[[dict[str, Any]], RestCall]] = {
    "submit": _submit,
    "pause": _control("pause"),
    "resume": _control("resume"),
    "cancel": _control("cancel"),
    "get": _get,
    "list": _list,
    "types": _types,
}


def _request(user: Any, peer: Peer, call: RestCall) -> WSGIRequest:
    body = b"" if call.body is None else encode(call.body).encode()
    domain, port = split_domain_port(peer.host)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": call.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": call.path,
        "QUERY_STRING": urlencode(call.query),
        "SERVER_NAME": domain or "localhost",
        "SERVER_PORT": port or ("443" if peer.secure else "80"),
        "HTTP_HOST": peer.host,
        "REMOTE_ADDR": peer.client,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "https" if peer.secure else "http",
    }
    if peer.forwarded_proto:
        environ["HTTP_X_FORWARDED_PROTO"] = peer.forwarded_proto
    request = WSGIRequest(environ)
    request._force_auth_user = user  # type: ignore[attr-defined]  # DRF's forced authentication
    return request


def _renamed(error: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    if not renames:
        return error
    error = dict(error)
    fields = error.get("fields")
    if isinstance(fields, dict):
        error["fields"] = {renames.get(k, k): v for k, v in fields.items()}
    for old, new in renames.items():
        if error.get("message", "").startswith(f"{old}: "):
            error["message"] = f"{new}: " + error["message"][len(old) + 2 :]
        if error.get("field") == old:
            error["field"] = new
    return error


def run_command(user: Any, peer: Peer, call: RestCall, req: Any) -> str:
    """Answer ``call`` with the REST view of its path, as the reply frame (DB thread)."""
    try:
        match = resolve(call.path)
        response = match.func(_request(user, peer, call), *match.args, **match.kwargs)
        data = response.data
        if 200 <= response.status_code < 300:
            return reply(req, data)
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            raise RuntimeError(f"{call.method} {call.path}: {response.status_code} {data!r}")
        return error_reply(req, _renamed(error, call.renames))
    except Exception:
        log.exception("WebSocket command %s %s failed", call.method, call.path)
        return error_reply(
            req, {"code": "server_error", "message": "internal error; see the server log"}
        )
