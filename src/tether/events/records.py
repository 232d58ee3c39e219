"""What travels on the event stream: status changes (``transitions.Change``, with their
TaskEvent id) and progress updates, their public form, and their compact wire form
between processes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tether.events.bus import ProgressUpdate
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


def to_wire(item: Change | ProgressUpdate) -> dict[str, Any]:
    """A compact JSON-able form for other processes."""
    if isinstance(item, ProgressUpdate):
        return {
            "t": item.task_id,
            "p": item.progress,
            "o": item.owner_id,
            "y": item.task_type,
            "a": iso(item.at),
        }
    return {
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


def from_wire(raw: Any) -> Change | ProgressUpdate | None:
    """Undo ``to_wire``; None for anything malformed (a foreign or corrupt message)."""
    try:
        task_id = int(raw["t"])
        owner = raw.get("o")
        owner_id = int(owner) if owner is not None else None
        ttype = str(raw.get("y") or "")
        at = datetime.fromisoformat(raw["a"].replace("Z", "+00:00")) if raw.get("a") else None
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
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
