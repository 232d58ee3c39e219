"""What travels on the event stream: status changes (``transitions.Change``, with their
TaskEvent id), progress updates and pipeline changes, their public form, and their
compact wire form between processes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tether.events.bus import PipelineUpdate, ProgressUpdate
from tether.states import Status
from tether.transitions import Change


def iso(at: datetime | None) -> str | None:
    """The REST API's form of a time: ISO 8601, UTC as ``Z``."""
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def status_event(c: Change, owner: str) -> dict[str, Any]:
    return {
        "kind": "status",
        "id": c.event_id,
        "task": c.task_id,
        "owner": owner,
        "task_type": c.task_type,
        "from": c.src.value if c.src is not None else None,
        "to": c.dst.value,
        "at": iso(c.at),
        "actor": c.actor,
        "reason": c.reason,
        "pipeline": c.pipeline_id,
    }


def progress_event(p: ProgressUpdate, owner: str) -> dict[str, Any]:
    return {
        "kind": "progress",
        "id": None,
        "task": p.task_id,
        "owner": owner,
        "task_type": p.task_type,
        "at": iso(p.at),
        "progress": p.progress,
    }


def pipeline_event(u: PipelineUpdate, owner: str) -> dict[str, Any]:
    """A pipeline's status change. ``id`` is null: it is not a task event and is not
    replayed; ``event`` is its own id in the pipeline's history."""
    return {
        "kind": "pipeline",
        "id": None,
        "pipeline": u.pipeline_id,
        "owner": owner,
        "name": u.name,
        "from": None if u.src is None else str(u.src),
        "to": str(u.dst),
        "at": iso(u.at),
        "actor": u.actor,
        "reason": u.reason,
        "event": u.event_id,
        "tasks": list(u.tasks),
    }


Item = Change | ProgressUpdate | PipelineUpdate


def describe(item: Item) -> str:
    """Names an item in a log line."""
    if isinstance(item, PipelineUpdate):
        return f"pipeline {item.pipeline_id}"
    return f"task {item.task_id}"


def to_wire(item: Item) -> dict[str, Any]:
    """A compact JSON-able form for other processes (a pipeline change has ``l`` and no
    ``t``, so a process that does not know it leaves it out)."""
    if isinstance(item, PipelineUpdate):
        return {
            "l": item.pipeline_id,
            "o": item.owner_id,
            "n": item.name,
            "f": None if item.src is None else str(item.src),
            "d": str(item.dst),
            "a": iso(item.at),
            "c": item.actor,
            "r": item.reason,
            "e": item.event_id,
            "k": list(item.tasks),
        }
    if isinstance(item, ProgressUpdate):
        return {
            "t": item.task_id,
            "p": item.progress,
            "o": item.owner_id,
            "y": item.task_type,
            "a": iso(item.at),
        }
    wire: dict[str, Any] = {
        "t": item.task_id,
        "e": item.event_id,
        "o": item.owner_id,
        "y": item.task_type,
        "f": item.src.value if item.src is not None else None,
        "d": item.dst.value,
        "a": iso(item.at),
        "c": item.actor,
        "r": item.reason,
    }
    if item.pipeline_id is not None:
        wire["l"] = item.pipeline_id
    return wire


def _time(raw: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(raw["a"].replace("Z", "+00:00")) if raw.get("a") else None


def _pipeline_from_wire(raw: dict[str, Any]) -> PipelineUpdate | None:
    at, tasks = _time(raw), raw.get("k") or []
    if at is None or not isinstance(tasks, list):
        return None
    return PipelineUpdate(
        int(raw["l"]),
        int(raw["o"]),
        str(raw.get("n") or ""),
        Status(raw["f"]) if raw.get("f") is not None else None,
        Status(raw["d"]),
        at,
        str(raw.get("c") or ""),
        str(raw.get("r") or ""),
        int(raw["e"]),
        tuple(int(t) for t in tasks),
    )


def from_wire(raw: Any) -> Item | None:
    """Undo ``to_wire``; None for anything malformed (a foreign or corrupt message)."""
    try:
        if "t" not in raw and "l" in raw:
            return _pipeline_from_wire(raw)
        task_id = int(raw["t"])
        owner = raw.get("o")
        owner_id = int(owner) if owner is not None else None
        ttype = str(raw.get("y") or "")
        at = _time(raw)
        if "p" in raw:
            progress = raw["p"]
            if not isinstance(progress, dict):
                return None
            return ProgressUpdate(task_id, progress, owner_id, ttype, at)
        src = Status(raw["f"]) if raw.get("f") is not None else None
        return Change(
            task_id,
            src,
            Status(raw["d"]),
            str(raw.get("r") or ""),
            int(raw["e"]),
            owner_id,
            ttype,
            at,
            str(raw.get("c") or ""),
            int(raw["l"]) if raw.get("l") is not None else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
