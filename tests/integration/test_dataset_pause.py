"""A pause during an import on the databases whose rows are prepared before the batch's
transaction (SQLite, MariaDB): the pause keeps a bounded part of what is prepared (so
it is not held up inserting a whole batch) and the rest is read again on resume. Run
on each test database; skipped on PostgreSQL, whose batches stream into a COPY."""

from __future__ import annotations

import threading
from functools import partial

import pytest

from tests.integration.conftest import wait_status, wait_until
from tests.integration.test_datasets import (
    _start_import,
    rows_of,
)
from tether import service
from tether.datasets import files, loader
from tether.datasets.dialects import dialect
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Task

pytestmark = pytest.mark.usefixtures("datasets_cleaned")

PREPARED_BLOCKS = 8  # blocks a batch has prepared when the pause comes


def test_pause_inserts_a_bounded_part_of_the_prepared_rows(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pause lands when a batch has prepared PREPARED_BLOCKS blocks (the test hands
    the loader its blocks one permit at a time); with no time allowed for inserting
    after a pause, the pause commits exactly the batch's first block (it always keeps
    one, so rapid pause/resume moves forward) and the resumed import reads the rest
    again: the table is exact in the end (none lost, none twice)."""
    if dialect().loads_raw_csv:
        pytest.skip("batches stream into a COPY here: nothing is prepared beforehand")
    for name, value in (("BATCH_SECONDS", 600.0), ("PREPARED_SECONDS", 600.0)):
        monkeypatch.setattr(loader, name, value)
    monkeypatch.setattr(loader, "PREPARED_ROWS", 10**9)
    monkeypatch.setattr(loader, "ROW_BLOCK_BYTES", 4096)
    monkeypatch.setattr(loader, "SAVE_INSERT_SECONDS", 0.0)
    permits = threading.Semaphore(0)
    ends: list[tuple[int, int]] = []  # (where a block taken starts, where it ends)
    real_block = files.Source.block

    def gated(self: files.Source, size: int) -> bytes:
        assert permits.acquire(timeout=60)
        block = real_block(self, size)
        ends.append((self.offset, self.offset + len(block)))
        return block

    monkeypatch.setattr(files.Source, "block", gated)
    task, _ = _start_import(monkeypatch, "bounded", batch_rows=10**9, seed=9)
    saved = [0]
    offsets: list[int] = []

    def blocks_loaded(n: int) -> bool:
        return len(ends) >= n

    try:
        for _ in range(4):
            since = len(ends)
            permits.release(PREPARED_BLOCKS)
            wait_until(partial(blocks_loaded, since + PREPARED_BLOCKS), "the blocks to load", 30)
            service.pause(task.pk, actor="test")
            permits.release()  # (should the loader wait for a block meanwhile)
            assert wait_status(task.pk, "paused", timeout=30).status == "paused"
            state = Task.objects.get(pk=task.pk).checkpoint or {}
            start, end = ends[since]  # the first block of this run ...
            if len(saved) > 1:
                assert start == offsets[-1]  # ... starts where the last pause saved
            assert state["offset"] == end, (state["offset"], ends[since:])
            assert int(state["loaded"]) > saved[-1]  # one block saved, the rest given back
            saved.append(int(state["loaded"]))
            offsets.append(state["offset"])
            service.resume(task.pk, actor="test")
    finally:
        permits.release(10**6)
    done = wait_status(task.pk, "succeeded", timeout=120)
    ds = Dataset.objects.get(name="bounded")
    assert [r[0] for r in rows_of(ds)] == list(range(1, 20_001))
    assert (done.result or {})["rows"] == 20_000
