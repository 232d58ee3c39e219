"""The PostgreSQL fast path of an import: blocks of CSV bytes go to ``COPY … (FORMAT
csv)`` as they are, once a cheap check (``RawBlocks``) shows that PostgreSQL will read
them exactly as the csv module and ``types.PARSERS`` would: quoting, line breaks, null
tokens, and the shape of every typed cell. The COPY also reports how many rows it read;
should PostgreSQL refuse a value or read another number of rows, the loader rolls the
batch back and redoes it cell by cell (``refused``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tether.datasets import sql
from tether.datasets.dialects.base import Rows
from tether.datasets.dialects.postgresql import CsvCopy
from tether.datasets.errors import CopyMismatch
from tether.datasets.files import Source
from tether.datasets.types import DIGITS_TO_ZERO, pg_shape_ok

MARK = b"\x00"
DELIMITERS = frozenset(",;|\t")  # the ones the check below knows how to read


def usable(src: Source, nulls: frozenset[str]) -> bool:
    """Whether blocks of this import may go raw at all: COPY's NULL is the empty field,
    so "" must be a null token, and the delimiter must be one the check knows."""
    return "" in nulls and src.delimiter in DELIMITERS


class RawBlocks:
    """Tells whether a block of whole records may be sent to COPY as it is."""

    def __init__(self, src: Source, kinds: Sequence[str], nulls: frozenset[str]) -> None:
        self.src = src
        self.width = len(kinds)
        self.delim = src.delimiter.encode()
        self.typed = [(i, k) for i, k in enumerate(kinds) if k != "text"]
        self.texts = [i for i, k in enumerate(kinds) if k == "text"]
        self.stamps = any(k in ("timestamp", "timestamptz") for k in kinds)
        self.raw_tokens = [b'"' + n.encode() + b'"' for n in nulls if n]
        # tokens as they look in the checked text (digits as 0): only false alarms
        self.tokens = [n.encode().translate(DIGITS_TO_ZERO) for n in nulls if n]
        d = re.escape(self.delim)
        self.quoted = re.compile(  # a quoted field that is a whole field
            rb'("(?<=[' + d + rb'\n]")[^"]*(?:""[^"]*)*")(?=[' + d + rb"\r\n]|\Z)"
        )
        self.shapes: dict[str, set[bytes]] = {k: set() for k in kinds}  # known good

    def count(self, b: bytes) -> int | None:
        """The number of records in block ``b`` if COPY will read it exactly as the
        csv module and PARSERS would; else None."""
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
        if self.stamps and (b":60" in b or _hour_24(b)):
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


def _hour_24(b: bytes) -> bool:
    """Whether a time of day may have hour 24 (PostgreSQL takes 24:00:00)."""
    i = b.find(b"24:00")
    while i > 0:
        if b[i - 1] in b"T ":
            return True
        i = b.find(b"24:00", i + 1)
    return i == 0


class CopySink:
    """A batch's blocks inside its transaction: raw blocks stream into one COPY (FORMAT
    csv), which must then report as many rows as the blocks had records; parsed rows
    go by a COPY of their own (sql.insert)."""

    def __init__(self, stage: str, columns: Sequence[dict[str, str]], delimiter: str) -> None:
        self.stage, self.columns, self.delimiter = stage, columns, delimiter
        self.copy: CsvCopy | None = None

    def raw(self, block: bytes, records: int) -> None:
        if self.copy is None:
            self.copy = CsvCopy(self.stage, self.columns, self.delimiter)
        self.copy.write(block, records)

    def rows(self, rows: Rows, ready: bool) -> None:
        self.end()
        sql.insert(self.stage, self.columns, rows, ready=ready)

    def end(self) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.close()

    def abort(self, cancel: bool = False) -> None:
        copy, self.copy = self.copy, None
        if copy is not None:
            copy.abort(cancel)


def refused(exc: BaseException) -> bool:
    """PostgreSQL refused data of a COPY (a data exception, SQLSTATE class 22), or
    read a different number of rows than the blocks had records."""
    import psycopg

    return isinstance(exc, psycopg.DataError | CopyMismatch)
