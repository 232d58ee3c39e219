"""The executor interface. Adapters (server, CLI) talk to executors only through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


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
    """Tasks run inside the server process (no separate worker needed)."""


class Executor(ABC):
    name: str = "abstract"
    capabilities: Capabilities = Capabilities()

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

    def check(self) -> list[str]:
        """Configuration problems, as sentences; empty when all is well."""
        return []


def seconds_setting(name: str, default: float) -> float:
    """A duration from ``settings.TETHER`` (e.g. LEASE_SECONDS, CANCEL_GRACE)."""
    from django.conf import settings

    conf: dict[str, Any] = getattr(settings, "TETHER", {})
    return float(conf.get(name, default))
