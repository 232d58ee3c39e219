"""A submitted pipeline document, checked whole before anything is stored.

The document is the data-pipeline service's payload as its users send it::

    {"pipeline_name": "sentinel_pipeline", "data_url": "", "project": "ids-drr",
     "transformers_list": [{"name": "sentinel", "order_no": 1, "context": {…}}, …]}

Every error names where it is (``transformers_list[1].context.date_start``), so a
client can point at the field; nothing is created unless every step is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tether import registry
from tether.exceptions import InternalTaskType, InvalidParams, TetherError
from tether.service import MAX_PAUSE_TIMEOUT, QUEUE_RE

MAX_STEPS = 100
MAX_ORDER_NO = 1_000_000
MAX_URL = 2000
TOP_KEYS = {"pipeline_name", "data_url", "project", "transformers_list", "pause_timeout"}
STEP_KEYS = {"name", "order_no", "context", "queue"}


@dataclass(frozen=True)
class StepSpec:
    index: int
    order_no: int
    name: str
    context: dict[str, Any]
    queue: str
    max_attempts: int
    max_recoveries: int
    has_rollback: bool


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    project: str
    data_url: str
    pause_timeout: float
    steps: list[StepSpec]

    @property
    def first_order(self) -> int:
        return min(s.order_no for s in self.steps)


def parse(body: Any) -> PipelineSpec:
    """Check a pipeline document; raises InvalidParams naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidParams("the body must be a JSON object")
    unknown = sorted(set(body) - TOP_KEYS)
    if unknown:
        raise InvalidParams(
            f"unknown field {unknown[0]!r} (known: {', '.join(sorted(TOP_KEYS))})",
            field=unknown[0],
        )
    name = _text(body, "pipeline_name", 200, required=True)
    project = _text(body, "project", 100)
    data_url = _text(body, "data_url", MAX_URL)
    if data_url:
        check_url(data_url, field="data_url")
    pause_timeout = body.get("pause_timeout", registry.DEFAULT_PAUSE_TIMEOUT)
    if (
        isinstance(pause_timeout, bool)
        or not isinstance(pause_timeout, int | float)
        or not 0 < pause_timeout <= MAX_PAUSE_TIMEOUT
    ):
        raise InvalidParams(
            f"pause_timeout must be a number > 0 and <= {MAX_PAUSE_TIMEOUT:g} seconds",
            field="pause_timeout",
        )
    items = body.get("transformers_list")
    if not isinstance(items, list) or not items:
        raise InvalidParams(
            "transformers_list must be a non-empty list of steps", field="transformers_list"
        )
    if len(items) > MAX_STEPS:
        raise InvalidParams(
            f"a pipeline has at most {MAX_STEPS} steps (got {len(items)})",
            field="transformers_list",
        )
    steps = [_step(i, item) for i, item in enumerate(items)]
    return PipelineSpec(name, project, data_url, float(pause_timeout), steps)


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    value = body.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidParams(f"{key} must be a{' non-empty' if required else ''} string", field=key)
    if len(value) > limit:
        raise InvalidParams(f"{key} is longer than {limit} characters", field=key)
    return value


def _step(index: int, item: Any) -> StepSpec:
    where = f"transformers_list[{index}]"
    if not isinstance(item, dict):
        raise InvalidParams(
            f"{where} must be an object with name, order_no and context",
            field=where,
            step=index,
        )
    unknown = sorted(set(item) - STEP_KEYS)
    if unknown:
        raise InvalidParams(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(STEP_KEYS))})",
            field=f"{where}.{unknown[0]}",
            step=index,
        )
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidParams(
            f"{where}.name must be a task type's name", field=f"{where}.name", step=index
        )
    order_no = item.get("order_no")
    if (
        isinstance(order_no, bool)
        or not isinstance(order_no, int)
        or not 0 <= order_no <= MAX_ORDER_NO
    ):
        raise InvalidParams(
            f"{where}.order_no must be an integer from 0 to {MAX_ORDER_NO}",
            field=f"{where}.order_no",
            step=index,
        )
    try:
        ttype = registry.get_type(name)
        if ttype.internal:
            raise InternalTaskType(f"{name!r} is started by Tether itself, not as a step")
        context = ttype.validate(item.get("context", {}))
    except TetherError as exc:
        field = exc.extra.get("field")
        inner = (
            f".context.{field}"
            if field
            else (".context" if isinstance(exc, InvalidParams) else ".name")
        )
        raise InvalidParams(
            f"{where} ({name}): {exc.message}", field=f"{where}{inner}", step=index
        ) from None
    queue = item.get("queue") or ttype.queue  # null or absent: the type's queue
    if not isinstance(queue, str) or not QUEUE_RE.match(queue):
        raise InvalidParams(
            f"{where}.queue must be 1-100 letters, digits, '_', '-', '.' or ':'",
            field=f"{where}.queue",
            step=index,
        )
    return StepSpec(
        index=index,
        order_no=order_no,
        name=ttype.name,
        context=context,
        queue=queue,
        max_attempts=ttype.max_attempts,
        max_recoveries=ttype.max_recoveries,
        has_rollback=ttype.rollback is not None,
    )


def check_url(url: str, *, field: str) -> None:
    """An http(s) URL whose host is public (see ``tether.netguard``)."""
    from tether import netguard

    try:  # urlsplit and port raise on a bad IPv6 literal or port
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError as exc:
        raise InvalidParams(f"{field} is not a valid URL ({exc})", field=field) from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise InvalidParams(f"{field} must be an http:// or https:// URL", field=field)
    problem = netguard.refused_host(hostname, port)
    if problem:
        raise InvalidParams(f"{field}: {problem}", field=field)
