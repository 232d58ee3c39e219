"""Where uploads and exports live (server-generated names under TETHER_HOME), and
reading CSV records with line numbers, byte progress and clear errors.

``Source`` reads an upload as bytes, forward from a byte offset that is always at a
record boundary: ``block`` hands out runs of whole records as raw bytes (for loaders that
check them cheaply and pass them on as they are), ``records`` parses records one at a
time with the csv module (for everything else, and to name the line of a bad one). Its
``offset`` and ``line`` after a record are what an import checkpoints, so a resumed
run seeks there instead of parsing its way back.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from tether.datasets.errors import DataError, TooManyColumns
from tether.datasets.fields import FieldCounter, max_columns

MAX_FIELD_BYTES = 1 << 20  # TETHER_CSV_MAX_FIELD_BYTES: the largest cell an import takes
RECORD_FIELDS = 16  # a record (or a line) may be this many times that long
csv.field_size_limit(MAX_FIELD_BYTES)


def max_field_bytes() -> int:
    """The largest field (cell) an import reads, in bytes (TETHER_CSV_MAX_FIELD_BYTES)."""
    from django.conf import settings

    conf: dict[str, Any] = getattr(settings, "TETHER", {})
    return max(1, int(conf.get("CSV_MAX_FIELD_BYTES", MAX_FIELD_BYTES)))


def size_text(n: int) -> str:
    """``1048576`` -> ``1 MiB`` (for messages)."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def has_long_run(data: bytes | bytearray, limit: int) -> bool:
    """Whether ``data`` (separators already mapped to ``\\n``) holds more than ``limit``
    bytes in a row without one. Linear: each window starts after the last separator of
    the one before, so no byte is looked at twice."""
    pos, end = 0, len(data)
    while end - pos > limit:
        last = data.rfind(b"\n", pos, pos + limit + 1)
        if last < 0:
            return True
        pos = last + 1
    return False


def data_dir(kind: str) -> Path:
    from django.conf import settings

    from tether.server.config import private_dir

    return private_dir(Path(getattr(settings, "TETHER_DATA_DIR", settings.TETHER_HOME)) / kind)


def new_upload_path() -> Path:
    return data_dir("uploads") / f"{uuid.uuid4().hex}.csv"


def export_path(task_id: int) -> Path:
    return data_dir("exports") / f"export-{int(task_id)}.csv"


class _Counting(io.RawIOBase):
    """A raw reader that counts the bytes read through it (for progress)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = int(self.raw.readinto(buffer))
        self.bytes += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


class Records:
    """CSV records of a file: ``line`` is the line number where the current record
    ends; ``bytes_read`` how far into the file reading got."""

    def __init__(self, path: Path, delimiter: str = ",") -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self._counter = _Counting(open(path, "rb", buffering=0))  # noqa: SIM115
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._counter, 1 << 20),
            encoding="utf-8-sig",
            newline="",
            errors="strict",
        )
        self._reader = csv.reader(self._text, delimiter=delimiter, strict=True)

    @property
    def line(self) -> int:
        return int(self._reader.line_num)

    @property
    def bytes_read(self) -> int:
        return self._counter.bytes

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self._reader)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"line {self.line + 1}: the file is not UTF-8 text "
                f"(byte 0x{exc.object[exc.start]:02x} cannot be decoded)"
            ) from None
        except csv.Error as exc:
            raise DataError(f"line {self.line + 1}: not valid CSV ({exc})") from None

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BOM = b"\xef\xbb\xbf"
READ_BYTES = 1 << 20
BLOCK_LIMIT = 16 << 20  # see Source.block


class Mark(NamedTuple):
    """A position in a Source: byte offset of the next record, lines before it."""

    offset: int
    line: int


class Source:
    """An uploaded CSV file as bytes, read forward from a record boundary.

    ``offset`` is the byte offset of the next unread record, ``line`` the number of
    physical lines before it (a line ends at \\n, \\r\\n or \\r, as the csv module
    counts them). A UTF-8 byte order mark at the start of the file is skipped.

    Memory and time stay bounded whatever the file holds: a field longer than
    ``max_field`` bytes (TETHER_CSV_MAX_FIELD_BYTES), a record longer than
    RECORD_FIELDS times that, or one of more than ``max_columns`` fields
    (TETHER_CSV_MAX_COLUMNS) fails with a DataError naming its line as soon as the
    reader gets that far (before the csv module makes its fields), and the buffer
    grows in place (no copy per read).
    """

    def __init__(
        self,
        path: Path,
        delimiter: str = ",",
        at: Mark | None = None,
        max_field: int = 0,
        max_cols: int = 0,
    ) -> None:
        self.path = path
        self.delimiter = delimiter
        self.max_field = max_field or max_field_bytes()
        self.max_columns = max_cols or max_columns()
        self.max_record = RECORD_FIELDS * self.max_field
        csv.field_size_limit(self.max_field)  # (characters: never more than its bytes)
        sep = delimiter.encode()
        self._seps = (sep, b"\r") if sep != b"\n" else (b"\r",)
        self.size = os.path.getsize(path)
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close / __exit__)
        self.start = len(BOM) if self._file.read(len(BOM)) == BOM else 0
        self._file.seek(self.start)
        self._buf = bytearray()
        self._base = self.start  # file offset of _buf[0]
        self._eof = False
        self.offset, self.line = self.start, 0
        self._record = Mark(self.start, 0)  # where the record being read began
        self._checked = (-1, 0)  # (region start, size) of the last _check_long scan
        self._sep = sep
        self._fields_of = -1  # the record whose fields _check_fields counts ...
        self._fields_to = 0  # ... up to this file offset:
        self._delims = 0  # its delimiters (a cheap upper bound of its fields - 1) ...
        self._counter: FieldCounter | None = None  # ... or its fields, counted exactly
        if at is not None:
            self.seek(at)

    # -- position -------------------------------------------------------------------
    def mark(self) -> Mark:
        return Mark(self.offset, self.line)

    def seek(self, at: Mark) -> None:
        """Continue from ``at`` (an earlier ``mark()``, or a checkpointed one)."""
        offset = max(at.offset, self.start)
        if self._base <= offset <= self._base + len(self._buf):
            self.offset, self.line = offset, at.line
            return
        self._file.seek(offset)
        self._buf, self._base, self._eof = bytearray(), offset, False
        self.offset, self.line = offset, at.line

    @property
    def at_end(self) -> bool:
        return self.offset >= self.size

    def _more(self, want: int = READ_BYTES) -> bool:
        """Read at least ``want`` more bytes into the buffer (dropping the consumed
        part); False at the end of the file. Amortised linear: a bytearray drops its
        front and grows at its end without copying what it keeps."""
        if self._eof:
            return False
        data = self._file.read(max(want, READ_BYTES))
        if not data:
            self._eof = True
            return False
        keep = self.offset - self._base
        if keep:
            del self._buf[:keep]
            self._base = self.offset
        self._buf += data
        return True

    def _check_long(self, start: int, stop: int) -> None:
        """``_buf[start:stop]`` is one line (or record) whose end is not in sight yet:
        fail once it holds a field over ``max_field`` bytes or is over ``max_record``.
        Scanned again only each time it has doubled (linear in all)."""
        n = stop - start
        region, scanned = self._checked
        if n <= self.max_field or (region == self._base + start and n < 2 * scanned):
            return
        self._checked = (self._base + start, n)
        data = bytes(self._buf[start:stop])
        for sep in self._seps:
            data = data.replace(sep, b"\n")
        if has_long_run(data, self.max_field):
            raise self._too_large("field", self.max_field)
        if n > self.max_record:
            raise self._too_large("record", self.max_record)

    def _check_fields(self, stop: int) -> None:
        """The record that began at ``_record`` goes on at least to ``_buf[stop]``:
        fail once it has more than ``max_columns`` fields. A count of delimiters while
        there are fewer than that (C speed); beyond, an exact count from the record's
        start (a delimiter inside quotes separates nothing). Each byte is looked at
        once per way of counting."""
        record, end = self._record.offset, self._base + stop
        if self._fields_of != record:
            self._fields_of, self._fields_to, self._delims = record, record, 0
            self._counter = None
        if end <= self._fields_to:
            return
        if self._counter is None:
            self._delims += self._buf.count(self._sep, self._fields_to - self._base, stop)
            self._fields_to = end
            if self._delims < self.max_columns:
                return
            self._counter = FieldCounter(self._sep, self.max_columns)
            self._fields_to = record
        while self._fields_to < end:
            at = self._fields_to
            part = (
                bytes(self._buf[at - self._base : stop])
                if at >= self._base  # (the record's first lines may be consumed already)
                else os.pread(self._file.fileno(), min(READ_BYTES, self._base - at), at)
            )
            if not part:
                return
            self._fields_to += len(part)
            if self._counter.feed(part):
                raise TooManyColumns(
                    f"line {self._record.line + 1}: {self._counter.fields:,} fields or "
                    f"more; an import takes at most {self.max_columns:,} columns "
                    "(TETHER_CSV_MAX_COLUMNS)"
                )

    def _too_large(self, what: str, limit: int) -> DataError:
        return DataError(
            f"line {self._record.line + 1}: {what} larger than {size_text(limit)}"
            + (" (TETHER_CSV_MAX_FIELD_BYTES)" if limit != MAX_FIELD_BYTES else "")
        )

    # -- raw blocks -----------------------------------------------------------------
    def block(self, size: int) -> bytes:
        """About ``size`` bytes from ``offset`` that end at a record boundary (found by
        quote parity: a newline after an even number of quote characters), not
        consumed yet; longer when a single record is longer; b"" at the end of the
        file. Malformed quoting (a quote inside an unquoted field) upsets the parity:
        then, once a block has grown to BLOCK_LIMIT without an even cut, it ends at its
        last line break instead, which may be inside what the csv module sees as a
        record. Loaders must check blocks before they trust them."""
        self._record = self.mark()
        while True:
            start = self.offset - self._base
            have = len(self._buf) - start
            if have < size and self._more(size - have):
                continue
            buf = self._buf
            end = start + size
            if self._eof and len(buf) <= end:
                return bytes(buf[start:])
            last = cut = buf.rfind(b"\n", start, end)
            quotes = buf.count(b'"', start, cut + 1) if cut >= 0 else 0
            while cut >= start and quotes & 1:
                prev = buf.rfind(b"\n", start, cut)
                quotes -= buf.count(b'"', max(prev + 1, start), cut + 1)
                cut = prev
            if cut >= start:
                return bytes(buf[start : cut + 1])
            if last >= start and size >= BLOCK_LIMIT:
                return bytes(buf[start : last + 1])
            if last < start:  # one line so far: it must not grow without bound
                self._check_long(start, end)
            self._check_fields(min(end, len(buf)))  # one record so far (or odd quoting)
            size *= 2  # one record (or odd quoting) longer than the block: look further

    def advance(self, nbytes: int, lines: int) -> None:
        """Consume ``nbytes`` of a block (whole records) spanning ``lines`` lines."""
        self.offset += nbytes
        self.line += lines

    # -- parsed records ---------------------------------------------------------------
    def _lines(self) -> Iterator[str]:
        """Decoded physical lines from ``offset``, consuming each as it is handed out."""
        while True:
            i = self.offset - self._base
            buf = self._buf
            nl = buf.find(b"\n", i)
            cr = buf.find(b"\r", i, nl if nl >= 0 else len(buf))
            if cr >= 0 and cr + 1 != nl:
                if cr + 1 == len(buf) and self._more():
                    continue  # a \r at the end of the buffer: \r\n or a lone \r?
                end = cr + 1
            elif nl >= 0:
                end = nl + 1
            else:
                self._check_long(i, len(buf))  # no line end in sight yet
                self._check_fields(len(buf))
                if self._more():
                    continue
                if i < len(buf):
                    end = len(buf)  # the last line, without a line break
                else:
                    return
            if self.offset + (end - i) - self._record.offset > self.max_record:
                raise self._too_large("record", self.max_record)  # (many lines)
            self._check_fields(end)
            raw = buf[i:end]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"line {self.line + 1}: the file is not UTF-8 text (byte "
                    f"0x{raw[exc.start]:02x} cannot be decoded)"
                ) from None
            self.offset += len(raw)
            self.line += 1
            yield text

    def records(self, until: int | None = None) -> Iterator[tuple[list[str], int]]:
        """Records parsed by the csv module, with the number of the line each ends on,
        from ``offset`` until it reaches ``until`` (or the end of the file). After each
        record ``offset``/``line`` are just past it."""
        reader = csv.reader(self._lines(), delimiter=self.delimiter, strict=True)
        while until is None or self.offset < until:
            self._record = self.mark()
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field larger than field limit" in str(exc):
                    raise self._too_large("field", self.max_field) from None
                raise DataError(f"line {self.line + 1}: not valid CSV ({exc})") from None
            yield record, self.line

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
