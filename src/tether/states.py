"""Task statuses and the single table of legal transitions (pure Python)."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a task is in its life. Final statuses never change again."""

    QUEUED = "queued"
    """Waiting for a worker slot (new, resumed, retried or recovered)."""
    RUNNING = "running"
    """A worker is executing the task function."""
    PAUSING = "pausing"
    """A pause was requested; it takes effect at the task's next control point."""
    PAUSED = "paused"
    """Stopped at a checkpoint; holds no worker. Resume re-queues it."""
    CANCELLING = "cancelling"
    """A cancel was requested; the rollback hook runs (or resumes after a crash)."""
    CANCELLED = "cancelled"
    """Rollback finished: the task's effects are undone. Final."""
    SUCCEEDED = "succeeded"
    """The task function returned; ``result`` holds its value. Final."""
    FAILED = "failed"
    """The task raised with all attempts used, its worker was lost more than
    max_recoveries times, or its rollback failed. Final."""

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @classmethod
    def choices(cls) -> list[tuple[str, str]]:
        return [(s.value, s.value) for s in cls]


FINAL = frozenset({Status.CANCELLED, Status.SUCCEEDED, Status.FAILED})
ACTIVE = frozenset({Status.RUNNING, Status.PAUSING, Status.CANCELLING})
"""Statuses in which a worker may hold the task."""

# (from, to) -> what causes it.  This is the only definition of legal transitions.
TRANSITIONS: dict[tuple[Status, Status], str] = {
    (Status.QUEUED, Status.RUNNING): "worker claims",
    (Status.QUEUED, Status.PAUSED): "pause",
    (Status.QUEUED, Status.CANCELLING): "cancel",
    (Status.RUNNING, Status.QUEUED): "lease lost / retry",
    (Status.RUNNING, Status.PAUSING): "pause",
    (Status.RUNNING, Status.CANCELLING): "cancel",
    (Status.RUNNING, Status.SUCCEEDED): "returns",
    (Status.RUNNING, Status.FAILED): "raises, attempts used",
    (Status.PAUSING, Status.PAUSED): "reached checkpoint",
    (Status.PAUSING, Status.CANCELLING): "cancel",
    (Status.PAUSING, Status.SUCCEEDED): "returns",
    (Status.PAUSING, Status.FAILED): "raises",
    (Status.PAUSED, Status.QUEUED): "resume",
    (Status.PAUSED, Status.CANCELLING): "cancel, pause expired",
    (Status.CANCELLING, Status.CANCELLED): "rollback done",
    (Status.CANCELLING, Status.FAILED): "rollback failed",
}


# A pipeline has the task statuses. Its status follows its steps' (a step claimed: the
# pipeline runs; every running step paused: it is paused), and a failed pipeline may be
# retried from its failed steps.
PIPELINE_TRANSITIONS: dict[tuple[Status, Status], str] = {
    (Status.QUEUED, Status.RUNNING): "a step runs",
    (Status.QUEUED, Status.PAUSING): "pause",
    (Status.QUEUED, Status.PAUSED): "pause, its steps paused",
    (Status.QUEUED, Status.CANCELLING): "cancel",
    (Status.QUEUED, Status.SUCCEEDED): "last steps succeeded",
    (Status.QUEUED, Status.FAILED): "a step failed",
    (Status.RUNNING, Status.PAUSING): "pause",
    (Status.RUNNING, Status.PAUSED): "its steps paused",
    (Status.RUNNING, Status.CANCELLING): "cancel",
    (Status.RUNNING, Status.SUCCEEDED): "last steps succeeded",
    (Status.RUNNING, Status.FAILED): "a step failed",
    (Status.PAUSING, Status.PAUSED): "its steps paused",
    (Status.PAUSING, Status.CANCELLING): "cancel",
    (Status.PAUSING, Status.SUCCEEDED): "last steps succeeded",
    (Status.PAUSING, Status.FAILED): "a step failed",
    (Status.PAUSED, Status.QUEUED): "resume",
    (Status.PAUSED, Status.CANCELLING): "cancel, pause expired",
    (Status.PAUSED, Status.FAILED): "a step failed",
    (Status.CANCELLING, Status.CANCELLED): "finished steps rolled back",
    (Status.CANCELLING, Status.FAILED): "a rollback failed",
    (Status.FAILED, Status.QUEUED): "retry",
    (Status.FAILED, Status.CANCELLING): "cancel: undo its finished steps",
}


def is_legal(src: Status | str, dst: Status | str) -> bool:
    return (Status(src), Status(dst)) in TRANSITIONS


def sources(
    dst: Status | str, table: dict[tuple[Status, Status], str] = TRANSITIONS
) -> frozenset[Status]:
    """Statuses from which ``dst`` may be reached (in ``table``: tasks by default)."""
    dst = Status(dst)
    return frozenset(src for (src, to) in table if to == dst)


STATUS_CHOICES = Status.choices()
"""Choices for model fields and the OpenAPI enum (one name: TaskStatus)."""
