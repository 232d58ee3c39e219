"""The ``@task`` decorator and the registry of task types (no Django, no HTTP)."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match

from tether import strictjson
from tether.exceptions import InvalidParams, UnknownTaskType

if TYPE_CHECKING:
    from tether.context import TaskContext

TaskFunc = Callable[..., Any]
RollbackFunc = Callable[["TaskContext"], None]
CheckFunc = Callable[[dict[str, Any]], None]

DEFAULT_QUEUE = "default"
DEFAULT_PAUSE_TIMEOUT = 300.0
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class TaskType:
    name: str
    func: TaskFunc
    queue: str = DEFAULT_QUEUE
    params_schema: dict[str, Any] = field(default_factory=lambda: dict(EMPTY_SCHEMA))
    rollback: RollbackFunc | None = None
    max_attempts: int = 3
    pause_timeout: float = DEFAULT_PAUSE_TIMEOUT
    retry_backoff: float = 1.0
    max_recoveries: int = 10
    recovery_backoff: float = 1.0
    description: str = ""
    supports_pause: bool = True
    # Submitted only by Tether itself (e.g. csv_import from an upload it has checked),
    # never through POST /api/v1/tasks: their params name server-side objects.
    internal: bool = False
    check: CheckFunc | None = None

    def validate(self, params: Any) -> dict[str, Any]:
        """Return params with schema defaults filled in, or raise InvalidParams."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise InvalidParams("params must be a JSON object")
        # the API's parser allows deeper bodies than every database stores
        unstorable = strictjson.problem(params)
        if unstorable is not None:
            raise InvalidParams(f"params cannot be stored: {unstorable.replace('$', 'params', 1)}")
        error = best_match(_validator(self.params_schema).iter_errors(params))
        if error is not None:
            where = ".".join(str(p) for p in error.absolute_path)
            prefix = f"params.{where}" if where else "params"
            hint = error.schema.get("description") if isinstance(error.schema, dict) else None
            msg = f"{prefix}: {error.message}" + (f" ({hint})" if hint else "")
            raise InvalidParams(msg, field=where or None)
        filled = copy.deepcopy(params)
        for key, spec in self.params_schema.get("properties", {}).items():
            if key not in filled and isinstance(spec, dict) and "default" in spec:
                filled[key] = copy.deepcopy(spec["default"])
        if self.check is not None:
            self.check(filled)
        return filled


def _is_integer(checker: Any, instance: Any) -> bool:
    """An int as the JSON had it: JSON Schema also counts 1.0 (and so 1e0) as an
    integer, which would reach a task as a float, and Python counts True."""
    return isinstance(instance, int) and not isinstance(instance, bool)


# params are never converted: "integer" takes only numbers written as integers
ParamsValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)

_REGISTRY: dict[str, TaskType] = {}
_VALIDATORS: dict[int, tuple[dict[str, Any], Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """One compiled validator per schema object (building one costs more than using it)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = _VALIDATORS[id(schema)] = (schema, ParamsValidator(schema))
    return cached[1]


def task(
    name: str | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    params: dict[str, Any] | None = None,
    rollback: RollbackFunc | None = None,
    max_attempts: int = 3,
    pause_timeout: float = DEFAULT_PAUSE_TIMEOUT,
    retry_backoff: float = 1.0,
    max_recoveries: int = 10,
    recovery_backoff: float = 1.0,
    description: str | None = None,
    supports_pause: bool = True,
    internal: bool = False,
    check: CheckFunc | None = None,
) -> Callable[[TaskFunc], TaskFunc]:
    """Register ``func(ctx, **params)`` as a task type.

    ``params`` is a JSON schema for the keyword arguments, validated on submit.
    ``rollback(ctx)`` undoes the task's effects on cancel; ``ctx.state`` is the last
    checkpoint. It must be idempotent: after a crash it runs again.
    ``max_recoveries``: how often the task is re-queued after its worker or server was
    lost (no attempt used) before it fails; the n-th recovery waits
    ``recovery_backoff * 2**(n-1)`` seconds (at most 60).
    ``internal`` types are submitted by Tether's own code only: the API refuses them
    (``internal_task_type``) and does not list them.
    ``check(params)`` checks what a schema cannot say (a real date, one field against
    another) on submit, after the schema and its defaults: it raises
    ``InvalidParams(message, field="date_end")``, and the task is not created.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    if max_recoveries < 0 or recovery_backoff < 0:
        raise ValueError("max_recoveries and recovery_backoff must be >= 0")

    def register(func: TaskFunc) -> TaskFunc:
        type_name = name or func.__name__
        schema = params if params is not None else dict(EMPTY_SCHEMA)
        Draft202012Validator.check_schema(schema)
        _REGISTRY[type_name] = TaskType(
            name=type_name,
            func=func,
            queue=queue,
            params_schema=schema,
            rollback=rollback,
            max_attempts=max_attempts,
            pause_timeout=pause_timeout,
            retry_backoff=retry_backoff,
            max_recoveries=max_recoveries,
            recovery_backoff=recovery_backoff,
            description=description or inspect.cleandoc(func.__doc__ or ""),
            supports_pause=supports_pause,
            internal=internal,
            check=check,
        )
        return func

    return register


def get_type(name: str) -> TaskType:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(t.name for t in submittable_types()) or "none"
        raise UnknownTaskType(f"unknown task type {name!r} (known: {known})") from None


def all_types() -> list[TaskType]:
    return sorted(_REGISTRY.values(), key=lambda t: t.name)


def submittable_types() -> list[TaskType]:
    """The task types a user may submit by name (all but the internal ones)."""
    return [t for t in all_types() if not t.internal]


def unregister(name: str) -> None:
    """Remove a task type (tests and plugins reloading)."""
    _REGISTRY.pop(name, None)
