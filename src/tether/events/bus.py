"""In-process publication of committed changes.

``publish`` runs in the thread that committed (from ``transaction.on_commit``), so a
sink must only enqueue and return at once: the hub and the cross-process publisher
each do their work in their own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressUpdate:
    """A task's latest progress figures (no history, no id)."""

    task_id: int
    progress: dict[str, Any]
    owner_id: int | None = None
    task_type: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class PipelineUpdate:
    """A committed change of a pipeline's status. ``event_id`` is its PipelineEvent's
    id (its own sequence, not the task events'); ``tasks`` are the ids of the step
    tasks started last (the current order), so a watcher learns new steps from it."""

    pipeline_id: int
    owner_id: int
    name: str
    src: str | None
    dst: str
    at: datetime
    actor: str
    reason: str
    event_id: int
    tasks: tuple[int, ...] = ()


Sink = Callable[[Sequence[Any]], None]
_sinks: list[Sink] = []


def add_sink(sink: Sink) -> None:
    """Hand every published batch to ``sink`` (which must not block)."""
    if sink not in _sinks:
        _sinks.append(sink)


def remove_sink(sink: Sink) -> None:
    if sink in _sinks:
        _sinks.remove(sink)


def publish(items: Sequence[Any]) -> None:
    """Hand committed changes (``transitions.Change``), progress updates
    (``ProgressUpdate``) and pipeline changes (``PipelineUpdate``) to every sink."""
    for sink in _sinks:
        try:
            sink(items)
        except Exception:  # a sink must never break the thread that committed
            log.exception("event sink failed")


def publish_progress(task_id: int, progress: dict[str, Any], at: datetime) -> None:
    if _sinks:
        publish([ProgressUpdate(task_id, progress, at=at)])
