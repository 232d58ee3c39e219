"""Tether: long-running tasks you can pause, resume, cancel with rollback, and watch."""

from tether.registry import task

__version__ = "0.1.0"
__all__ = ["__version__", "task"]
