"""Executors run tasks. ``embedded`` runs them in threads inside ``tether serve``."""

from tether.executors.base import Capabilities, Executor

__all__ = ["Capabilities", "Executor"]
