"""The row loader of an import: the records of an upload into its staging table, in
batches, each committed together with the import's checkpoint (records consumed, rows
loaded, and the byte offset and line where the next record starts).

A batch runs for about BATCH_SECONDS (at most about BATCH_ROWS rows) and is written
block by block (about BLOCK_BYTES of whole records). Each block takes a fast path when
it is plain enough to check cheaply, else the per-cell path (csv module and PARSERS,
which also name the line of a bad record, or skip it):

- where the dialect ``loads_raw_csv`` (PostgreSQL): the block's bytes go to COPY as
  they are (``raw_copy``), inside the batch's transaction. Should PostgreSQL still
  refuse a value, the batch is rolled back and redone cell by cell.
- elsewhere (SQLite, MariaDB): the block is parsed by the csv module and converted
  column by column (types.column_values); a batch's rows are prepared before its
  transaction, so SQLite's one writer lock (which a pause request must wait for too)
  is held for a few tens of milliseconds at a time.

A pending pause (or shutdown) ends the batch at the next block: what is loaded so far
commits with its checkpoint (``keep_work``), so rapid pause/resume still moves forward.
Where rows were prepared, only about SAVE_INSERT_SECONDS more of them are inserted
(at least one block): the blocks after that are read again on resume. A pending cancel
abandons the batch (rolled back: the rollback drops it all anyway). Either takes effect
within one block, not one batch.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from django.db import connection

from tether.context import KEEP_WORK_ON, TaskContext
from tether.datasets import raw_copy, sql
from tether.datasets.dialects import dialect
from tether.datasets.dialects.base import ByColumn, Rows
from tether.datasets.errors import (
    BatchInterrupted,
    BatchRejected,
    CellError,
    DataError,
    Interrupted,
    RowTooBig,
)
from tether.datasets.files import Mark, Source
from tether.datasets.types import PARSERS, column_values

BATCH_ROWS = 1_000_000  # at most about this many rows per committed batch ...
BATCH_SECONDS = 1.0  # ... or about this long (a pause does not wait for it)
PREPARED_SECONDS = 0.05  # rows prepared before the transaction, per batch ...
PREPARED_ROWS = 50_000  # ... at most (they are held in memory)
SAVE_INSERT_SECONDS = 0.01  # a pending pause: prepared rows still inserted (about)
SAVE_WAIT_SECONDS = 0.05  # PostgreSQL: a pause waits this long for a batch's COPY to end
BLOCK_BYTES = 1 << 18  # raw CSV checked and written at a time (PostgreSQL) ...
ROW_BLOCK_BYTES = 1 << 17  # ... parsed and converted at a time (the others)
MAX_SKIPPED_LINES = 100  # skipped lines named in the result (all are counted)


class Sink(Protocol):
    """Where a batch's blocks go."""

    def raw(self, block: bytes, records: int) -> None: ...
    def rows(self, rows: Rows, ready: bool) -> None: ...
    def end(self) -> None: ...
    def abort(self, cancel: bool = False) -> None: ...


class PreparedRows:
    """Rows prepared before the batch's transaction, inserted in it block by block. Each
    block carries the batch's checkpoint fields as of its end, so a pause may keep only
    the blocks inserted by then (the rest is read again on resume)."""

    def __init__(self, line: int = 0) -> None:
        self.parts: list[tuple[Rows, bool]] = []
        self.ends: list[tuple[int, dict[str, Any]]] = []  # (parts so far, fields)
        self.line = line  # the lines before the block being inserted

    def end_block(self, fields: dict[str, Any]) -> None:
        self.ends.append((len(self.parts), fields))

    def raw(self, block: bytes, records: int) -> None:
        raise NotImplementedError  # (raw blocks only go to a COPY)

    def rows(self, rows: Rows, ready: bool) -> None:
        if rows:
            self.parts.append((rows, ready))

    def end(self) -> None:
        pass

    def abort(self, cancel: bool = False) -> None:
        pass

    def insert(
        self, stage: str, columns: Sequence[dict[str, str]], saving: Callable[[], bool]
    ) -> dict[str, Any] | None:
        """Insert the blocks; once ``saving()`` (a pause or shutdown is pending) and
        SAVE_INSERT_SECONDS have passed, stop after the block being inserted. Returns
        the checkpoint fields of the last block inserted when it stopped early."""
        began = time.monotonic()
        at = 0
        for n, (upto, fields) in enumerate(self.ends, 1):
            for rows, ready in self.parts[at:upto]:
                sql.insert(stage, columns, rows, ready=ready)
            at = upto
            self.line = fields["line"]
            if n < len(self.ends) and saving() and time.monotonic() - began >= SAVE_INSERT_SECONDS:
                return fields
        for rows, ready in self.parts[at:]:  # (after the last block end: none)
            sql.insert(stage, columns, rows, ready=ready)
        return None


class RowParser:
    """Parses records into typed rows; collects skipped lines."""

    def __init__(self, columns: Sequence[dict[str, str]], nulls: Sequence[str], skip: bool) -> None:
        self.parsers = [PARSERS[c["type"]] for c in columns]
        self.width = len(columns)
        self.nulls = frozenset(nulls)
        self.skip = skip
        self.skipped: list[dict[str, Any]] = []
        self.skipped_count = 0

    def parse(self, record: list[str], line: int) -> list[Any] | None:
        if not record:
            return None  # a blank line
        try:
            if len(record) != self.width:
                raise CellError(f"has {len(record)} fields, expected {self.width}")
            nulls = self.nulls
            return [
                None if cell in nulls else parse(cell)
                for parse, cell in zip(self.parsers, record, strict=True)
            ]
        except CellError as exc:
            if not self.skip:
                raise DataError(f"line {line}: {exc}") from None
            self.skipped_count += 1
            if len(self.skipped) < MAX_SKIPPED_LINES:
                self.skipped.append({"line": line, "reason": str(exc)})
            return None


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_on = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is prepared or loaded (a fraction of a
    second): the csv module makes a list per record, and collections triggered by them
    cost a tenth of the time. Reference counting still frees everything the loader
    makes; collection resumes between batches (and when the last concurrent import
    using this leaves)."""
    global _gc_holders, _gc_was_on
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_on = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_on:
                gc.enable()


def line_count(block: bytes) -> int:
    """Physical lines in a block of whole records (\\n, \\r\\n and \\r end a line)."""
    n = block.count(b"\n")
    if b"\r" in block:
        n += block.count(b"\r") - block.count(b"\r\n")
    if block and block[-1] not in b"\r\n":
        n += 1
    return n


class Loader:
    """Loads the records after ``src.offset`` into the staging table (see the module's
    docstring); ``run`` returns the state of the last committed batch."""

    def __init__(
        self,
        ctx: TaskContext,
        src: Source,
        stage: str,
        state: dict[str, Any],
        nulls: Sequence[str],
        skip: bool,
    ) -> None:
        self.ctx, self.src, self.stage, self.state = ctx, src, stage, state
        self.columns = state["columns"]
        self.kinds = [c["type"] for c in self.columns]
        self.width = len(self.columns)
        self.nulls = frozenset(nulls)
        db = dialect()
        self.streams = db.loads_raw_csv  # batches stream inside their transaction
        self.dates_as_text = db.dates_as_text
        self.parser = RowParser(self.columns, nulls, skip)
        self.block_bytes = BLOCK_BYTES if self.streams else ROW_BLOCK_BYTES
        self.raw_blocks = (
            raw_copy.RawBlocks(src, self.kinds, self.nulls)
            if self.streams and raw_copy.usable(src, self.nulls)
            else None
        )
        done = max(1, state["consumed"])
        self.row_bytes = float(state.get("row_bytes") or 0) or max(
            16.0, (state["offset"] - state.get("data_offset", 0)) / done
        )
        self.rejected = 0

    # -- batches ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        ctx, src = self.ctx, self.src
        state = self.state
        if not src.at_end:
            sql.fresh_keys(self.stage)
        self._report(state, last=src.at_end)
        while not src.at_end:
            at = src.mark()
            nxt = dict(state)  # ctx.atomic writes it as the checkpoint at its commit
            try:
                if self.streams:  # (row locks only: no need to prepare first)
                    try:
                        with ctx.atomic(nxt), gc_paused():
                            sql.relaxed_commit()
                            self._batch(nxt, self._copy(), raw=self._raw_ok())
                    except BatchRejected as refused:
                        self.rejected += 1
                        src.seek(at)
                        nxt = dict(state)
                        with ctx.atomic(nxt), gc_paused():
                            sql.relaxed_commit()
                            self._batch(nxt, self._copy(), raw=False, until=refused.args[0])
                else:
                    rows = PreparedRows(at.line)
                    with gc_paused():
                        self._batch(nxt, rows, raw=False, on_block=rows.end_block)
                        with ctx.atomic(nxt, keep_work=True):  # (a pause: after the commit)
                            kept = rows.insert(self.stage, self.columns, self._saving)
                            if kept is not None:  # the rest is read again on resume
                                nxt.update(kept)
                                src.seek(Mark(kept["offset"], kept["line"]))
                    del rows
            except BatchInterrupted:
                src.seek(at)
                ctx.progress(state["loaded"])  # raises the pending pause/cancel
                continue  # (withdrawn meanwhile: do the batch again)
            except Exception as exc:
                reason = dialect().row_too_big(exc)
                if reason is None:
                    raise
                # (rows go in many at a time: the refused one is in the batch, or the
                # prepared block, that starts on this line)
                first = 1 + (at.line if self.streams else rows.line)
                raise RowTooBig(
                    f"a row at or after line {first} is too wide for "
                    f"{connection.display_name} ({reason}); fewer or shorter columns would fit"
                ) from None
            state = nxt
            self._report(state, last=src.at_end)
        return state

    def _copy(self) -> raw_copy.CopySink:
        return raw_copy.CopySink(self.stage, self.columns, self.src.delimiter)

    def _raw_ok(self) -> bool:
        """Raw blocks, unless refused three times already (then the data is not plain
        enough for the check to be worth it)."""
        return self.raw_blocks is not None and self.rejected < 3

    def _saving(self) -> bool:
        """A pause or shutdown is pending: end the batch, keeping what it loaded."""
        return self.ctx.stop_requested in KEEP_WORK_ON

    def _give_up(self) -> Callable[[], bool]:
        """When to cancel the end of a batch's COPY: a cancel (or a lost lease) at once,
        a pause or shutdown once it has waited SAVE_WAIT_SECONDS."""
        seen: list[float] = []

        def give_up() -> bool:
            if not self.ctx.should_stop():
                return False
            if not self._saving():
                return True
            seen[:] = seen or [time.monotonic()]
            return time.monotonic() - seen[0] > SAVE_WAIT_SECONDS

        return give_up

    def _report(self, state: dict[str, Any], last: bool) -> None:
        loaded = state["loaded"]
        done = max(1, self.src.offset - state.get("data_offset", 0))
        rest = max(1, self.src.size - state.get("data_offset", 0))
        total = loaded if last else max(loaded, int(loaded * rest / done))
        self.ctx.progress(loaded, total=total, unit="rows")

    def _batch(
        self,
        state: dict[str, Any],
        sink: Sink,
        raw: bool,
        until: int | None = None,
        on_block: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Take one batch of records from ``src.offset`` (or those up to ``until``, the
        end of a refused batch) into ``sink``; put the new position and counts into
        ``state`` (and, after each block, hand them to ``on_block``)."""
        src, ctx = self.src, self.ctx
        self.parser.skipped = list(state["skipped"])
        self.parser.skipped_count = state["skipped_count"]
        seconds, most = (
            (BATCH_SECONDS, BATCH_ROWS)
            if self.streams
            else (PREPARED_SECONDS, min(BATCH_ROWS, PREPARED_ROWS))
        )
        deadline = time.monotonic() + seconds
        records = loaded = 0
        reached = src.offset  # the end of the last block taken
        try:
            while not src.at_end:
                if until is not None:
                    if src.offset >= until:
                        break
                elif records >= most or time.monotonic() >= deadline:
                    break
                if ctx.should_stop():
                    if self._saving():
                        break
                    raise BatchInterrupted()
                want = most - records if until is None else most
                block = src.block(int(min(self.block_bytes, max(256, want * self.row_bytes))))
                reached = src.offset + len(block)
                n = self.raw_blocks.count(block) if raw and self.raw_blocks else None
                if n is not None:
                    sink.raw(block, n)
                    src.advance(len(block), line_count(block))
                    got = rows = n
                else:
                    got, rows = self._block(block, sink)
                records += got
                loaded += rows
                self.row_bytes = 0.8 * self.row_bytes + 0.2 * len(block) / max(1, got)
                if on_block is not None:
                    on_block(self._fields(state, records, loaded))
            # ending a COPY waits for the server to read what is in flight: a cancel
            # meanwhile cancels it (the batch is rolled back); a pause lets it end (so
            # the batch is kept) unless that takes longer than SAVE_WAIT_SECONDS
            with sql.interruptible(self._give_up()):
                sink.end()
        except Interrupted:
            sink.abort()
            raise BatchInterrupted() from None
        except BaseException as exc:
            refused = self.streams and raw_copy.refused(exc)
            sink.abort(cancel=not refused)  # (a refused COPY has ended already)
            if raw and refused:
                raise BatchRejected(reached) from exc
            raise
        state.update(self._fields(state, records, loaded))

    def _fields(self, state: dict[str, Any], records: int, loaded: int) -> dict[str, Any]:
        """The checkpoint fields after ``records`` more records (``loaded`` rows)."""
        return {
            "consumed": state["consumed"] + records,
            "loaded": state["loaded"] + loaded,
            "offset": self.src.offset,
            "line": self.src.line,
            "skipped": list(self.parser.skipped),
            "skipped_count": self.parser.skipped_count,
        }

    # -- blocks not sent raw --------------------------------------------------------------
    def _block(self, block: bytes, sink: Sink) -> tuple[int, int]:
        """Converted column by column when it parses cleanly, else record by record.
        Returns (records consumed, rows loaded)."""
        rows = self._columns(block)
        if rows is None:
            return self._cells(self.src.offset + len(block), sink)
        sink.rows(rows, ready=True)
        self.src.advance(len(block), line_count(block))
        return len(rows), len(rows)

    def _columns(self, block: bytes) -> ByColumn | None:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\x00" in text:
            return None
        try:
            records = list(
                csv.reader(io.StringIO(text, newline=""), delimiter=self.src.delimiter, strict=True)
            )
        except csv.Error:
            return None
        if not records or set(map(len, records)) != {self.width}:
            return None  # blank lines, ragged rows
        try:
            return ByColumn(
                [
                    column_values(kind, cells, self.nulls, self.dates_as_text)
                    for kind, cells in zip(self.kinds, zip(*records, strict=True), strict=True)
                ]
            )
        except CellError:
            return None

    def _cells(self, until: int, sink: Sink) -> tuple[int, int]:
        """Records up to ``until`` (or a little beyond: a record is never split) parsed
        cell by cell: a bad one fails the import naming its line, or is skipped."""
        rows: list[list[Any]] = []
        n = 0
        for record, line in self.src.records(until):
            n += 1
            row = self.parser.parse(record, line)
            if row is not None:
                rows.append(row)
            if not n % 1000 and self.ctx.should_stop():
                if self._saving():
                    break  # the batch ends after this record
                raise BatchInterrupted()
        sink.rows(rows, ready=False)
        return n, len(rows)
