"""The executor interface. Adapters (server, CLI) talk to executors only through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from django.core.checks import CheckMessage


@dataclass(frozen=True)
class Capabilities:
    """What an executor can do, so callers can adapt instead of guessing."""

    pause: bool = True
    """Running tasks can be paused at control points and resumed later."""
    push_control: bool = True
    """Pause/cancel reach running tasks without waiting for a poll."""
    distributed: bool = False
    """Workers may run on other machines (state must be in a shared database)."""
    hard_terminate: bool = False
    """A task that ignores a cancel can be killed after a grace period."""
    in_process: bool = False
    """Tasks run inside the server process (no separate worker needed): their status
    changes are heard in this process as they commit."""
    needs_broker: bool = False
    """Needs the message broker at TETHER_BROKER_URL (checked before serving)."""
    remote_events: bool = False
    """Status changes committed in worker processes are sent to the serving process's
    event stream (its hub), where waiting requests hear them (``transitions.watch``)."""


class Executor(ABC):
    name: str = "abstract"
    """What TETHER_EXECUTOR says, and the health endpoint reports; callers read
    ``capabilities`` instead of comparing names."""
    capabilities: Capabilities = Capabilities()

    @classmethod
    def from_settings(cls, **options: Any) -> Executor:
        """An instance configured from ``settings.TETHER`` (see ``executors.build``);
        ``options`` it has no use for are ignored."""
        return cls()

    @abstractmethod
    def start(self) -> None:
        """Begin taking work (recover what a previous run left behind first)."""

    @abstractmethod
    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; ask running tasks to stop at their next control point and
        re-queue them; return within about ``timeout`` seconds."""

    @property
    @abstractmethod
    def slots(self) -> int:
        """How many tasks may run at once."""

    def check(self) -> list[CheckMessage]:
        """Configuration problems, as Django system check messages (ids ``tether.E…``
        and ``tether.W…``); run by ``tether manage check`` and before serving."""
        return []

    def changes_heard(self) -> bool:
        """Whether status changes of this executor's tasks reach this process's
        ``transitions.watch`` now: in-process, or on the event stream from workers. A
        caller waiting for a task to settle may then wait on it instead of re-reading
        the database."""
        caps = self.capabilities
        return caps.in_process or (caps.remote_events and self.receiving_events())

    def receiving_events(self) -> bool:
        """Whether this process is receiving the status changes of worker processes
        (its hub runs and the cross-process transport is connected)."""
        return False

    def run_worker(self, queues: list[str], concurrency: int, loglevel: str) -> None:
        """Run a worker process taking tasks from ``queues`` (for executors whose
        tasks do not run ``in_process``); returns when the worker stops."""
        raise NotImplementedError(f"the {self.name} executor has no separate workers")


def seconds_setting(name: str, default: float) -> float:
    """A duration from ``settings.TETHER`` (e.g. LEASE_SECONDS, CANCEL_GRACE)."""
    from django.conf import settings

    conf: dict[str, Any] = getattr(settings, "TETHER", {})
    return float(conf.get(name, default))
