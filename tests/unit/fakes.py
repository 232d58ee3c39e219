"""In-memory context store for unit tests of pure logic."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any


class MemoryStore:
    def __init__(self) -> None:
        self.saves: list[dict[str, Any]] = []
        self.owned = True
        self.in_tx = False
        self.committed: list[Any] = []
        self.pending: list[Any] = []

    def save(
        self,
        task_id: int,
        token: str,
        *,
        progress: dict[str, Any] | None,
        checkpoint: dict[str, Any] | None,
    ) -> bool:
        if not self.owned:
            return False
        self.saves.append({"progress": progress, "checkpoint": checkpoint, "in_tx": self.in_tx})
        return True

    @contextmanager
    def atomic(self) -> Any:
        self.in_tx = True
        try:
            yield
            self.committed += self.pending
        finally:
            self.pending = []
            self.in_tx = False

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        return [s["checkpoint"] for s in self.saves if s["checkpoint"] is not None]
