"""What every database does the same way for dataset tables, and the hooks where one
does it otherwise (``Dialect``). Each database's class overrides only what differs:
``postgresql.PostgreSQL``, ``sqlite.SQLite``, ``mysql.MySQL``."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from typing import IO, Any, ClassVar

from django.db import connection

from tether.datasets.csv_output import CsvLines, export_cell

ROW_KEY = "_rid"


def q(name: str) -> str:
    """Quote an identifier (names are checked before they get here)."""
    return connection.ops.quote_name(name)


def column_list(columns: Sequence[dict[str, str]]) -> str:
    return ", ".join(q(c["name"]) for c in columns)


class ByColumn:
    """Rows given as one sequence of values per column (all of the same length)."""

    def __init__(self, values: Sequence[Sequence[Any]]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else 0

    def rows(self) -> list[tuple[Any, ...]]:
        return list(zip(*self.values, strict=True))


Rows = Sequence[Sequence[Any]] | ByColumn


class Dialect:
    """One database's way with dataset tables. Capability flags that callers read:

    - ``loads_raw_csv``: COPY takes checked raw CSV blocks, streamed inside the batch's
      transaction (the import's fast path); otherwise rows are prepared before it.
    - ``exports_by_copy``: export pages stream from the server (so pages can be large).
    - ``dates_as_text``: dates and timestamps are stored as ISO text.
    """

    name: ClassVar[str]
    types: ClassVar[dict[str, str]]  # column type -> SQL type
    key_ddl: ClassVar[str]  # the row key column
    loads_raw_csv: ClassVar[bool] = False
    exports_by_copy: ClassVar[bool] = False
    dates_as_text: ClassVar[bool] = False
    # the most columns a dataset table may have here, whatever TETHER_CSV_MAX_COLUMNS
    # says: the database's limit on a table's columns, less the row key. Whether a row
    # of that many fits depends on its cells; a row that does not is refused as it is
    # inserted (``row_too_big``)
    max_columns: ClassVar[int] = 1000

    # -- tables ------------------------------------------------------------------------
    def key_column(self, *, indexed: bool) -> str:
        """The row key's DDL; ``indexed=False`` only matters where an index can be built
        later (PostgreSQL)."""
        return self.key_ddl

    def create_table(self, table: str, columns: Sequence[dict[str, str]], *, key: bool) -> None:
        cols = ", ".join(f"{q(c['name'])} {self.types[c['type']]}" for c in columns)
        with connection.cursor() as cur:
            cur.execute(f"CREATE TABLE {q(table)} ({self.key_column(indexed=key)}, {cols})")

    def rename(self, src: str, dst: str) -> None:
        with connection.cursor() as cur:
            cur.execute(f"ALTER TABLE {q(src)} RENAME TO {q(dst)}")

    def add_key(self, table: str, should_stop: Callable[[], bool] | None) -> None:
        """Make the row key of a table created without its index the primary key."""

    def fresh_keys(self, table: str) -> None:
        """Make this session's next row keys of ``table`` larger than any so far."""

    # -- loading -----------------------------------------------------------------------
    @contextmanager
    def interruptible(self, should_stop: Callable[[], bool] | None) -> Iterator[None]:
        """Cancel the statements of the block once ``should_stop()`` is true (raising
        errors.Interrupted), where the database can be told to (PostgreSQL)."""
        yield

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Connection settings for the length of a load (SQLite)."""
        yield

    def relaxed_commit(self) -> None:
        """Let this transaction's commit not wait for its log to reach disk (PostgreSQL)."""

    def insert(
        self, table: str, columns: Sequence[dict[str, str]], rows: Rows, ready: bool
    ) -> None:
        """Append rows (Python values, None for null); ``ready``: already in the form
        this database stores (only SQLite's differs)."""
        if isinstance(rows, ByColumn):
            rows = rows.rows()
        marks = ", ".join(["%s"] * len(columns))
        with connection.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {q(table)} ({column_list(columns)}) VALUES ({marks})", rows
            )

    def row_too_big(self, exc: BaseException) -> str | None:
        """The database's own words when ``exc`` (or the driver error it wraps) says
        that a row is too big for a table, else None."""
        return None

    # -- reading -----------------------------------------------------------------------
    def date_param(self, day: date) -> Any:
        """A date as a query parameter compared with a date or timestamp column."""
        return day

    def where(
        self, date_column: str | None, start: date | None, end: date | None, after: int
    ) -> tuple[str, list[Any]]:
        """Rows after row key ``after`` whose ``date_column`` is in [start, end]."""
        clauses: list[str] = [f"{ROW_KEY} > %s"]
        args: list[Any] = [after]
        if date_column and start is not None:
            clauses.append(f"{q(date_column)} >= %s")
            args.append(self.date_param(start))
        if date_column and end is not None:  # the whole end day is included
            clauses.append(f"{q(date_column)} < %s")
            args.append(self.date_param(date.fromordinal(end.toordinal() + 1)))
        return " AND ".join(clauses), args

    def read_page(
        self,
        table: str,
        columns: Sequence[dict[str, str]],
        *,
        after: int,
        limit: int,
        date_column: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> list[tuple[Any, ...]]:
        """Rows with their row key first, in insertion order, after row key ``after``."""
        names = ", ".join([ROW_KEY, column_list(columns)])
        where, args = self.where(date_column, start, end, after)
        with connection.cursor() as cur:
            cur.execute(
                f"SELECT {names} FROM {q(table)} WHERE {where} ORDER BY {ROW_KEY} LIMIT %s",
                [*args, limit],
            )
            return list(cur.fetchall())

    def export_page(
        self,
        out: IO[bytes],
        table: str,
        columns: Sequence[dict[str, str]],
        *,
        after: int,
        limit: int,
        raw: bool,
        date_column: str | None,
        start: date | None,
        end: date | None,
    ) -> tuple[int, int]:
        """Up to ``limit`` rows after row key ``after`` appended to ``out`` as CSV;
        returns (rows written, the row key up to which every row is written)."""
        rows = self.read_page(
            table, columns, after=after, limit=limit, date_column=date_column, start=start, end=end
        )
        if not rows:
            return 0, after
        lines = CsvLines()
        writer = csv.writer(lines, lineterminator="\r\n")
        kinds = [c["type"] for c in columns]
        for row in rows:
            writer.writerow([export_cell(v, k, raw) for v, k in zip(row[1:], kinds, strict=True)])
        out.write(lines.text().encode())
        return len(rows), int(rows[-1][0])
