"""Executors run tasks: ``embedded`` in threads inside ``tether serve``, ``celery`` in
``tether worker`` processes.

The rest of Tether reaches the configured executor through ``current()`` and reads its
``capabilities``; this module is the one place that maps ``TETHER_EXECUTOR`` to a class.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from django.core import checks
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from tether.executors.base import Capabilities, Executor

__all__ = ["KINDS", "Capabilities", "Executor", "UnknownExecutor", "build", "current", "install"]

KINDS = {
    "embedded": "tether.executors.embedded.EmbeddedExecutor",
    "celery": "tether.executors.celery_executor.CeleryExecutor",
}
"""TETHER_EXECUTOR values and their classes (imported only when chosen)."""


class UnknownExecutor(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"TETHER_EXECUTOR is {name!r}; use " + " or ".join(repr(k) for k in KINDS))


def configured_name() -> str:
    from django.conf import settings

    return str(settings.TETHER.get("EXECUTOR", "embedded"))


def build(**options: Any) -> Executor:
    """A new executor of the configured kind (TETHER_EXECUTOR), not started. ``options``
    are what ``tether serve`` may set, e.g. ``workers``; a kind ignores those it has no
    use for. Raises UnknownExecutor."""
    name = configured_name()
    if name not in KINDS:
        raise UnknownExecutor(name)
    cls: type[Executor] = import_string(KINDS[name])
    return cls.from_settings(**options)


_current: Executor | None = None
_lock = threading.Lock()


def current() -> Executor:
    """This process's executor: the one ``tether serve`` installed, else one built from
    the settings on first use (and kept). Raises UnknownExecutor."""
    global _current
    with _lock:
        if _current is None:
            _current = build()
        return _current


def install(executor: Executor | None) -> Executor | None:
    """Make ``executor`` this process's executor (None: build it from the settings again
    on next use). Returns it."""
    global _current
    with _lock:
        _current = executor
    return executor


@receiver(setting_changed)
def _forget_on_new_settings(setting: str, **_: Any) -> None:
    if setting == "TETHER":  # tests overriding the settings get an executor of them
        install(None)


def system_check(app_configs: Sequence[Any] | None = None, **_: Any) -> list[checks.CheckMessage]:
    """The configured executor's own check (``tether manage check``, ``tether serve``)."""
    try:
        executor = current()
    except UnknownExecutor as exc:
        return [
            checks.Error(
                str(exc),
                hint="unset TETHER_EXECUTOR to choose by TETHER_BROKER_URL",
                id="tether.E001",
            )
        ]
    return list(executor.check())
