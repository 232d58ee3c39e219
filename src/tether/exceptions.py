"""One base error, specific subclasses, a default message and an API code each."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class TetherError(Exception):
    """Base class of every error Tether raises on purpose."""

    code = "error"
    http_status = 400
    default_message = "Tether error."

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.extra = extra
        super().__init__(self.message)


class UnknownTaskType(TetherError):
    code = "unknown_task_type"
    default_message = "No such task type."


class InternalTaskType(TetherError):
    """A task type that only Tether itself submits (``@task(internal=True)``)."""

    code = "internal_task_type"
    default_message = "That task type is started by Tether itself, not submitted directly."


class InvalidParams(TetherError):
    code = "invalid_params"
    default_message = "The params do not match the task type's schema."


class TaskNotFound(TetherError):
    code = "not_found"
    http_status = 404
    default_message = "No such task."


class IllegalTransition(TetherError):
    """The requested status change is not in the transition table for the current status."""

    code = "illegal_transition"
    http_status = 409
    default_message = "That is not possible in the task's current status."

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a task that is {status}", status=status)
        self.status = status


class ServiceUnavailable(TetherError):
    """A service Tether needs (the broker) cannot be reached; nothing was created."""

    code = "broker_unavailable"
    http_status = 503
    default_message = "The message broker is unreachable; try again shortly."


class LeaseLost(TetherError):
    """This worker no longer owns the task (another took it over); stop without writing."""

    code = "lease_lost"
    default_message = "The worker lost its lease on the task."


class ResultNotJSON(TetherError):
    """A task's result, checkpoint or progress is not strict JSON (``tether.strictjson``):
    that task fails with this code, no other task is affected."""

    code = "result_not_json"
    default_message = "The task's output is not strict JSON."


class HomeLocked(TetherError):
    code = "home_locked"
    default_message = "Another tether server is already using this TETHER_HOME."


class StopKind(StrEnum):
    """Why a running task is asked to stop at its next control point. The value is what
    travels between processes (the Celery control broadcast)."""

    PAUSE = "pause"
    """A user paused the task: it keeps its work and waits in ``paused``."""
    CANCEL = "cancel"
    """A user cancelled the task: its rollback undoes what it did."""
    SHUTDOWN = "shutdown"
    """The worker is stopping: the task goes back to the queue and continues elsewhere."""
    LEASE_LOST = "lease_lost"
    """Another worker took the task over: stop without writing anything."""

    @property
    def keeps_work(self) -> bool:
        """Whether the task continues later from what it did (pause, shutdown)."""
        return self in (StopKind.PAUSE, StopKind.SHUTDOWN)

    @property
    def requested(self) -> bool:
        """Whether a user asked for it (pause, cancel), rather than the worker."""
        return self in (StopKind.PAUSE, StopKind.CANCEL)


class ControlSignal(BaseException):
    """Raised inside task code at a control point. Derives from BaseException so that
    ``except Exception`` in task code does not swallow a pause or cancel."""

    kind: ClassVar[StopKind]


class PauseSignal(ControlSignal):
    kind = StopKind.PAUSE


class CancelSignal(ControlSignal):
    kind = StopKind.CANCEL


class ShutdownSignal(ControlSignal):
    kind = StopKind.SHUTDOWN


class LeaseLostSignal(ControlSignal):
    kind = StopKind.LEASE_LOST


SIGNALS: dict[StopKind, type[ControlSignal]] = {
    cls.kind: cls for cls in (PauseSignal, CancelSignal, ShutdownSignal, LeaseLostSignal)
}
