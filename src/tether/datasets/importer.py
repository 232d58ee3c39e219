"""The ``csv_import`` task type: a CSV upload into a dataset table.

Rows are loaded into a staging table (``tstg_<task id>``) in batches; each batch commits
together with the checkpoint (records consumed, and the byte offset and line where the
next record starts), so pause, resume, crash and redelivery continue exactly where the
last batch ended: no row lost, none twice. How a batch is loaded fast: see ``_Loader``. On
success the staging table becomes (create, replace) or is appended to (append) the
dataset's table in one transaction, so readers never see a partial import. Cancel,
pause expiry or a bad row drop the staging table: the target is as before.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tether.context import KEEP_WORK_ON, TaskContext
from tether.datasets import checks, sql
from tether.datasets.files import DataError, Mark, Source
from tether.datasets.types import (
    DEFAULT_NULLS,
    DIGITS_TO_ZERO,
    PARSERS,
    TYPES,
    CellError,
    column_values,
    infer,
    pg_shape_ok,
)
from tether.models import Dataset, Task, Upload
from tether.registry import task

log = logging.getLogger(__name__)
BATCH_ROWS = 1_000_000  # at most about this many rows per committed batch ...
BATCH_SECONDS = 1.0  # ... or about this long (a pause does not wait for it: see _Loader)
PREPARED_SECONDS = 0.15  # SQLite, MariaDB: rows prepared per batch (held in memory) ...
PREPARED_ROWS = 50_000  # ... at most
SAVE_WAIT_SECONDS = 0.05  # PostgreSQL: a pause waits this long for a batch's COPY to end
BLOCK_BYTES = 1 << 20  # raw CSV checked and written at a time (PostgreSQL) ...
ROW_BLOCK_BYTES = 1 << 17  # ... parsed and converted at a time (the others)
SAMPLE_ROWS = 1000
MAX_SKIPPED_LINES = 100
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

PARAMS = {
    "type": "object",
    "properties": {
        "upload": {
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "public id of an upload (POST /api/v1/datasets/import makes one)",
        },
        "dataset": {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": "dataset name: letters, digits, '_' and '-'",
        },
        "mode": {"enum": ["create", "append", "replace"], "default": "create"},
        "delimiter": {"type": "string", "minLength": 1, "maxLength": 1, "default": ","},
        "header": {"type": "boolean", "default": True},
        "null_values": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "maxItems": 20,
            "default": list(DEFAULT_NULLS),
        },
        "columns": {
            "type": "array",
            "maxItems": 1000,
            "items": {
                "type": "object",
                "required": ["name", "type"],
                "properties": {"name": {"type": "string"}, "type": {"enum": list(TYPES)}},
                "additionalProperties": False,
            },
        },
        "on_error": {"enum": ["fail", "skip"], "default": "fail"},
    },
    "required": ["upload", "dataset"],
    "additionalProperties": False,
}


def task_owner(ctx: TaskContext) -> int:
    """The id of the user who owns the running task."""
    return int(Task.objects.filter(id=ctx.task_id).values_list("owner_id", flat=True)[0])


UploadRef = str | int  # a public id; an int (the pk) in tasks queued before public ids


def _owned_uploads(owner_id: int, ref: UploadRef) -> QuerySet[Upload]:
    """The upload ``ref`` if ``owner_id`` owns it: every read and delete goes through
    here, so a task never touches another user's upload."""
    by = {"id": ref} if isinstance(ref, int) else {"public_id": str(ref)}
    return Upload.objects.filter(owner_id=owner_id, **by)


def _upload(ctx: TaskContext, ref: UploadRef) -> Upload:
    upload = _owned_uploads(task_owner(ctx), ref).first()
    if upload is None:
        raise DataError(f"no upload {ref}")
    return upload


def _upload_file(upload: Upload) -> Any:
    from tether.datasets.files import data_dir

    return data_dir("uploads") / upload.path


def _discard_upload(ctx: TaskContext, ref: UploadRef) -> None:
    upload = _owned_uploads(task_owner(ctx), ref).first()
    if upload is not None:
        _upload_file(upload).unlink(missing_ok=True)
        upload.delete()


def _plan(
    ctx: TaskContext,
    src: Source,
    *,
    dataset: str,
    mode: str,
    header: bool,
    columns: Sequence[dict[str, str]] | None,
    nulls: Sequence[str],
) -> tuple[list[dict[str, str]], Mark, float]:
    """Decide the columns (declared, the dataset's for append, or inferred from a
    sample). Returns them, where the data starts, and the sample's bytes per record."""
    records = src.records()
    first, first_line = checks.first_record(records)
    names = checks.file_names(first, first_line, header=header, declared=columns)
    data_at = src.mark() if header else Mark(src.start, 0)
    sample: list[list[str]] = [] if header else [first]
    for row, _line in records:
        sample.append(row)
        if len(sample) >= SAMPLE_ROWS:
            break
    row_bytes = (src.offset - data_at.offset) / max(1, len(sample))
    existing = Dataset.objects.filter(owner_id=task_owner(ctx), name=dataset).first()
    if mode == "create" and existing is not None:
        raise DataError(f"dataset {dataset!r} exists already (use mode append or replace)")
    if mode == "append" and existing is None:
        raise DataError(f"dataset {dataset!r} does not exist (use mode create)")
    if mode == "append" and existing is not None:  # the staging table in the file's order
        planned = checks.match_columns(
            names,
            dataset,
            existing.columns,
            by_position=not header and not columns,
            declared=columns,
        )
    elif columns:
        planned = [{"name": n, "type": c["type"]} for n, c in zip(names, columns, strict=True)]
    else:
        planned = infer(names, sample, nulls)
    return planned, data_at, row_bytes


class _Batch:
    """Parses records into typed rows; collects skipped lines."""

    def __init__(
        self,
        columns: Sequence[dict[str, str]],
        nulls: Sequence[str],
        skip: bool,
        skipped: list[dict[str, Any]],
        skipped_count: int,
    ) -> None:
        self.parsers = [PARSERS[c["type"]] for c in columns]
        self.width = len(columns)
        self.nulls = frozenset(nulls)
        self.skip = skip
        self.skipped = skipped
        self.skipped_count = skipped_count

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


def drop_staging(ctx: TaskContext) -> None:
    """Rollback: the target is left exactly as it was before the import (also when the
    cancel came after the publish, in the moment before the task's success)."""
    state = ctx.state
    if state.get("published"):
        _unpublish(state)
    sql.drop_table(sql.staging_name(ctx.task_id))
    if state.get("upload"):
        _discard_upload(ctx, state["upload"])


def retired_name(task_id: int) -> str:
    """Where a replace puts the table it replaced, until its task is over (the sweep
    drops it then; a cancel right after the publish puts it back)."""
    return f"tret_{int(task_id)}"


def _unpublish(state: dict[str, Any]) -> None:
    """Undo a publish: drop a created dataset, delete appended rows, put a replaced
    table back (see _publish for what ``state["before"]`` holds)."""
    before = state.get("before") or {}
    with transaction.atomic():
        ds = (
            Dataset.objects.select_for_update().filter(id=int(state.get("dataset_id") or 0)).first()
        )
        if ds is None:
            return  # deleted meanwhile: nothing left to undo
        mode = state.get("mode")
        if mode == "replace" and ds.table == before.get("table"):
            return  # undone already (a rollback resumed after a crash)
        if mode == "create":
            ds.delete()
            sql.drop_table(ds.table)
            return
        if mode == "append" and "rows_after" in before:
            sql.delete_rows(ds.table, after=before["rows_after"], upto=before["rows_upto"])
            ds.row_count = sql.count(ds.table)
        elif mode == "replace" and before.get("retired") and sql.table_exists(before["retired"]):
            sql.drop_table(ds.table)
            sql.rename(before["retired"], before["table"])
            ds.table, ds.columns = before["table"], before["columns"]
            ds.row_count = before["row_count"]
        else:
            raise DataError("too late to undo: the import had already been published")
        ds.last_import_at = parse_datetime(before.get("last_import_at") or "")
        ds.last_import_task_id = before.get("last_import_task_id")
        ds.save()


@task(
    name="csv_import",
    queue="data",
    rollback=drop_staging,
    params=PARAMS,
    max_attempts=3,
    internal=True,  # its upload is checked by the datasets API, which submits it
)
def csv_import(
    ctx: TaskContext,
    *,
    upload: UploadRef,
    dataset: str,
    mode: str = "create",
    delimiter: str = ",",
    header: bool = True,
    null_values: Sequence[str] = DEFAULT_NULLS,
    columns: Sequence[dict[str, str]] | None = None,
    on_error: str = "fail",
) -> dict[str, Any]:
    """Import an uploaded CSV file into a dataset (create, append or replace)."""
    began = time.monotonic()
    stage = sql.staging_name(ctx.task_id)
    state = dict(ctx.state)
    if state.get("published") and "result" in state:  # stopped after its last commit
        _discard_upload(ctx, upload)
        return dict(state["result"])
    try:
        path = _upload_file(_upload(ctx, upload))
        if not path.exists():
            raise DataError(f"the file of upload {upload} is gone")
        with Source(path, delimiter) as src:
            if "columns" not in state:  # first run: plan, then create the staging table
                planned, data_at, row_bytes = _plan(
                    ctx,
                    src,
                    dataset=dataset,
                    mode=mode,
                    header=header,
                    columns=columns,
                    nulls=null_values,
                )
                state = {
                    "columns": planned,
                    "consumed": 0,
                    "loaded": 0,
                    "skipped": [],
                    "skipped_count": 0,
                    "upload": upload,
                    "mode": mode,
                    "header": header,
                    "offset": data_at.offset,
                    "line": data_at.line,
                    "data_offset": data_at.offset,
                    "row_bytes": row_bytes,
                    "key": "deferred",
                }
                with ctx.atomic(state):
                    sql.drop_table(stage)
                    sql.create_table(stage, planned, key=False)
                src.seek(data_at)  # the sample is loaded with the rest
            elif "offset" in state:  # resumed: continue after what was committed
                src.seek(Mark(state["offset"], state["line"]))
            else:  # resumed from a checkpoint without offsets: parse the way back
                records = src.records()
                for _ in range(state["consumed"] + (1 if state["header"] else 0)):
                    next(records, None)
                state = {**state, "offset": src.offset, "line": src.line, "data_offset": src.start}
            with sql.bulk_load():
                state = _Loader(ctx, src, stage, state, null_values, on_error == "skip").run()
        while True:
            try:
                return _publish(
                    ctx,
                    state,
                    dataset=dataset,
                    mode=mode,
                    began=began,
                    loaded=state["loaded"],
                    skipped=state["skipped"],
                    skipped_count=state["skipped_count"],
                )
            except sql.Interrupted:  # a pause or cancel came while the index was built
                ctx.progress(state["loaded"])  # raises it (or, withdrawn: publish again)
    except DataError:
        sql.drop_table(stage)
        _discard_upload(ctx, upload)
        raise


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_on = False


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
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


class _Interrupted(Exception):
    """A cancel (or a lost lease) arrived during a batch: the batch is given up."""


class _Rejected(Exception):
    """PostgreSQL refused the raw CSV of a batch: it is redone cell by cell."""


def _line_count(block: bytes) -> int:
    """Physical lines in a block of whole records (\\n, \\r\\n and \\r end a line)."""
    n = block.count(b"\n")
    if b"\r" in block:
        n += block.count(b"\r") - block.count(b"\r\n")
    if block and block[-1] not in b"\r\n":
        n += 1
    return n


MARK = b"\x00"
PG_DELIMITERS = frozenset(",;|\t")


class _Loader:
    """Loads the records after ``src.offset`` into the staging table in batches, each
    committed with the checkpoint (records consumed, rows loaded, byte offset, line).

    A batch runs for about BATCH_SECONDS (at most about BATCH_ROWS rows) and is written
    block by block (about BLOCK_BYTES of whole records). Each block takes the fast path
    when it is plain enough to check cheaply, else the per-cell path (csv module and
    PARSERS, which also name the line of a bad record, or skip it):

    - PostgreSQL: the block's bytes go to ``COPY … (FORMAT csv)`` as they are, after a
      check that PostgreSQL will read them exactly as the csv module and PARSERS would
      (quoting, line breaks, null tokens, and the shape of every typed cell). Should
      PostgreSQL still refuse a value, the batch is rolled back and redone cell by cell.
    - SQLite, MariaDB: the block is parsed by the csv module and converted column by
      column (types.column_values), then inserted many rows per statement.

    A pending pause (or shutdown) ends the batch at the next block: what is loaded so
    far commits with its checkpoint, so rapid pause/resume still moves forward. A
    pending cancel abandons the batch (rolled back: the rollback drops it all anyway).
    Either takes effect within one block, not one batch.
    """

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
        self.skip = skip
        self.pg = sql.vendor() == "postgresql"
        self.sqlite = sql.vendor() == "sqlite"
        self.parser = _Batch(self.columns, nulls, skip, [], 0)
        self.block_bytes = BLOCK_BYTES if self.pg else ROW_BLOCK_BYTES
        self.raw_ok = self.pg and "" in self.nulls and src.delimiter in PG_DELIMITERS
        self.delim = src.delimiter.encode()
        self.typed = [(i, k) for i, k in enumerate(self.kinds) if k != "text"]
        self.texts = [i for i, k in enumerate(self.kinds) if k == "text"]
        self.stamps = any(k in ("timestamp", "timestamptz") for k in self.kinds)
        self.raw_tokens = [b'"' + n.encode() + b'"' for n in self.nulls if n]
        # tokens as they look in the checked text (digits as 0): only false alarms
        self.tokens = [n.encode().translate(DIGITS_TO_ZERO) for n in self.nulls if n]
        d = re.escape(self.delim)
        self.quoted = re.compile(  # a quoted field that is a whole field
            rb'("(?<=[' + d + rb'\n]")[^"]*(?:""[^"]*)*")(?=[' + d + rb"\r\n]|\Z)"
        )
        self.shapes: dict[str, set[bytes]] = {k: set() for k in self.kinds}  # known good
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
                if self.pg:  # streamed inside the transaction (row locks only)
                    try:
                        with ctx.atomic(nxt), _gc_paused():
                            sql.relaxed_commit()
                            self._batch(nxt, _CopySink(self), raw=self.raw_ok and self.rejected < 3)
                    except _Rejected as refused:
                        self.rejected += 1
                        src.seek(at)
                        nxt = dict(state)
                        with ctx.atomic(nxt), _gc_paused():
                            sql.relaxed_commit()
                            self._batch(nxt, _CopySink(self), raw=False, until=refused.args[0])
                else:  # prepared first, so SQLite's one writer lock is held briefly
                    rows = _Collect()
                    with _gc_paused():
                        self._batch(nxt, rows, raw=False)
                        with ctx.atomic(nxt, keep_work=True):  # (a pause: after the commit)
                            rows.insert(self)
                    del rows
            except _Interrupted:
                src.seek(at)
                ctx.progress(state["loaded"])  # raises the pending pause/cancel
                continue  # (withdrawn meanwhile: do the batch again)
            state = nxt
            self._report(state, last=src.at_end)
        return state

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
        self, state: dict[str, Any], sink: _Sink, raw: bool, until: int | None = None
    ) -> None:
        """Take one batch of records from ``src.offset`` (or those up to ``until``, the
        end of a refused batch) into ``sink``; put the new position and counts into
        ``state``."""
        src, ctx = self.src, self.ctx
        self.parser.skipped = list(state["skipped"])
        self.parser.skipped_count = state["skipped_count"]
        seconds, most = (
            (BATCH_SECONDS, BATCH_ROWS)
            if self.pg
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
                    raise _Interrupted()
                want = most - records if until is None else most
                block = src.block(int(min(self.block_bytes, max(256, want * self.row_bytes))))
                reached = src.offset + len(block)
                n = self._raw_records(block) if raw else None
                if n is not None:
                    sink.raw(block, n)
                    src.advance(len(block), _line_count(block))
                    got = rows = n
                else:
                    got, rows = self._block(block, sink)
                records += got
                loaded += rows
                self.row_bytes = 0.8 * self.row_bytes + 0.2 * len(block) / max(1, got)
            # ending a COPY waits for the server to read what is in flight: a cancel
            # meanwhile cancels it (the batch is rolled back); a pause lets it end (so
            # the batch is kept) unless that takes longer than SAVE_WAIT_SECONDS
            with sql.interruptible(self._give_up()):
                sink.end()
        except sql.Interrupted:
            sink.abort()
            raise _Interrupted() from None
        except BaseException as exc:
            sink.abort(cancel=not _refused(exc))  # (a refused COPY has ended already)
            if raw and _refused(exc):
                raise _Rejected(reached) from exc
            raise
        state.update(
            consumed=state["consumed"] + records,
            loaded=state["loaded"] + loaded,
            offset=src.offset,
            line=src.line,
            skipped=self.parser.skipped,
            skipped_count=self.parser.skipped_count,
        )

    # -- blocks ---------------------------------------------------------------------------
    def _raw_records(self, b: bytes) -> int | None:
        """The number of records in block ``b`` if PostgreSQL's COPY (FORMAT csv) will
        read it exactly as the csv module and PARSERS would; else None. (The COPY also
        reports how many rows it read: a mismatch redoes the batch cell by cell.)"""
        if MARK in b:
            return None
        parts = self.quoted.split(b"\n" + b) if b'"' in b else [b"\n" + b]
        s = MARK.join(parts[::2])[1:]  # each quoted field (a whole field) -> MARK
        if b'"' in s:
            return None  # a quote inside an unquoted field, or one left open
        if b"\r" in s:  # only \r\n line breaks (PostgreSQL wants one kind per COPY)
            if s.count(b"\r") != s.count(b"\r\n") or s.count(b"\r\n") != s.count(b"\n"):
                return None
            s = s.replace(b"\r\n", b"\n")
        if self.width == 1 and (s[:1] == b"\n" or b"\n\n" in s or b"\\." in s):
            return None  # blank lines (the csv module skips them), COPY's \. marker
        n = s.count(b"\n") + (not s.endswith(b"\n"))
        if self.stamps and (b":60" in b or self._hour_24(b)):
            return None
        d = self.delim
        flat = s.translate(DIGITS_TO_ZERO).replace(b"\n", d).split(d)
        if s.endswith(b"\n"):
            flat.pop()
        if len(flat) != n * self.width:
            return None  # ragged rows (or blank lines)
        if self.tokens:  # null tokens other than "" (COPY's NULL) must not occur
            quoted = parts[1::2]
            if any(t in quoted for t in self.raw_tokens):
                return None
            for i in self.texts:
                cells = flat[i :: self.width]
                if any(t in cells for t in self.tokens):
                    return None
        for i, kind in self.typed:  # (tokens in typed columns fail their shape)
            known = self.shapes[kind]
            for shape in set(flat[i :: self.width]) - known:
                if shape and not pg_shape_ok(kind, shape):
                    return None
                known.add(shape)
        # a field over the limit (quoted ones counted with their quotes, so near it the
        # csv module decides) goes the per-cell way, which names its line
        limit = self.src.max_field
        if len(b) > limit and max(map(len, [*flat, *parts[1::2]])) > limit:
            return None
        return n

    @staticmethod
    def _hour_24(b: bytes) -> bool:
        """Whether a time of day may have hour 24 (PostgreSQL takes 24:00:00)."""
        i = b.find(b"24:00")
        while i > 0:
            if b[i - 1] in b"T ":
                return True
            i = b.find(b"24:00", i + 1)
        return i == 0

    def _block(self, block: bytes, sink: _Sink) -> tuple[int, int]:
        """A block not sent raw: converted column by column when it parses cleanly,
        else record by record. Returns (records consumed, rows loaded)."""
        rows = self._columns(block)
        if rows is None:
            return self._cells(self.src.offset + len(block), sink)
        sink.rows(rows, ready=True)
        self.src.advance(len(block), _line_count(block))
        return len(rows), len(rows)

    def _columns(self, block: bytes) -> sql.ByColumn | None:
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
            return sql.ByColumn(
                [
                    column_values(kind, cells, self.nulls, self.sqlite)
                    for kind, cells in zip(self.kinds, zip(*records, strict=True), strict=True)
                ]
            )
        except CellError:
            return None

    def _cells(self, until: int, sink: _Sink) -> tuple[int, int]:
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
                raise _Interrupted()
        sink.rows(rows, ready=False)
        return n, len(rows)


class _Sink:
    """Where a batch's blocks go."""

    def raw(self, block: bytes, records: int) -> None:
        raise NotImplementedError

    def rows(self, rows: Sequence[Sequence[Any]] | sql.ByColumn, ready: bool) -> None:
        raise NotImplementedError

    def end(self) -> None:
        pass

    def abort(self, cancel: bool = False) -> None:
        pass


class _CopySink(_Sink):
    """PostgreSQL, inside the batch's transaction: raw blocks stream into one COPY
    (FORMAT csv), which must then report as many rows as the blocks had records; rows
    go by a COPY of their own (sql.insert)."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.copy: sql.CsvCopy | None = None

    def raw(self, block: bytes, records: int) -> None:
        if self.copy is None:
            lo = self.loader
            self.copy = sql.CsvCopy(lo.stage, lo.columns, lo.src.delimiter)
        self.copy.write(block, records)

    def rows(self, rows: Sequence[Sequence[Any]] | sql.ByColumn, ready: bool) -> None:
        self.end()
        sql.insert(self.loader.stage, self.loader.columns, rows, ready=ready)

    def end(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.close()

    def abort(self, cancel: bool = False) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.abort(cancel)


class _Collect(_Sink):
    """SQLite, MariaDB: rows prepared before the batch's transaction, inserted in it."""

    def __init__(self) -> None:
        self.parts: list[tuple[Sequence[Sequence[Any]] | sql.ByColumn, bool]] = []

    def rows(self, rows: Sequence[Sequence[Any]] | sql.ByColumn, ready: bool) -> None:
        if rows:
            self.parts.append((rows, ready))

    def insert(self, loader: _Loader) -> None:
        for rows, ready in self.parts:
            sql.insert(loader.stage, loader.columns, rows, ready=ready)


def _refused(exc: BaseException) -> bool:
    """PostgreSQL refused data of a COPY (a data exception, SQLSTATE class 22), or
    read a different number of rows than the blocks had records."""
    import psycopg

    return isinstance(exc, psycopg.DataError | sql.CopyMismatch)


def _publish(
    ctx: TaskContext,
    state: dict[str, Any],
    *,
    dataset: str,
    mode: str,
    began: float,
    loaded: int,
    skipped: list[dict[str, Any]],
    skipped_count: int,
) -> dict[str, Any]:
    owner_id = task_owner(ctx)
    stage = sql.staging_name(ctx.task_id)
    columns = state["columns"]
    now = timezone.now()
    final = {**state, "published": True}
    try:
        with ctx.atomic(final):
            existing = (
                Dataset.objects.select_for_update().filter(owner_id=owner_id, name=dataset).first()
            )
            if existing is not None:  # what an undo needs (see _unpublish)
                final["before"] = {
                    "table": existing.table,
                    "columns": existing.columns,
                    "row_count": existing.row_count,
                    "last_import_at": (
                        existing.last_import_at.isoformat() if existing.last_import_at else None
                    ),
                    "last_import_task_id": existing.last_import_task_id,
                }
            if mode == "append":
                if existing is None:
                    raise DataError(f"dataset {dataset!r} was deleted during the import")
                after = sql.max_key(existing.table)
                sql.append(stage, existing.table, columns, ctx.should_stop)
                sql.drop_table(stage)
                final["before"].update(rows_after=after, rows_upto=sql.max_key(existing.table))
                existing.row_count = sql.count(existing.table)
                target = existing
            else:
                if mode == "create" and existing is not None:
                    raise DataError(f"dataset {dataset!r} was created meanwhile")
                table = sql.new_table_name()
                sql.rename(stage, table)
                if state.get("key") == "deferred":
                    sql.add_key(table, ctx.should_stop)
                if existing is not None:  # replace: the old table is dropped later
                    retired = retired_name(ctx.task_id)
                    sql.drop_table(retired)
                    sql.rename(existing.table, retired)
                    final["before"]["retired"] = retired
                    existing.table, existing.columns = table, columns
                    target = existing
                else:
                    target = Dataset(owner_id=owner_id, name=dataset, table=table, columns=columns)
                target.row_count = loaded
            target.last_import_at = now
            target.last_import_task_id = ctx.task_id
            target.save()
            final["dataset_id"] = target.pk
            final["result"] = {
                "dataset": dataset,
                "mode": mode,
                "rows": loaded,
                "columns": target.columns,  # (an append's file may order them otherwise)
                "skipped_count": skipped_count,
                "skipped_lines": skipped,
                "seconds": round(time.monotonic() - began, 3),
            }
    except IntegrityError:
        raise DataError(f"dataset {dataset!r} was created meanwhile") from None
    _discard_upload(ctx, state["upload"])
    return dict(final["result"])
