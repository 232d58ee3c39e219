"""SQLite: dates and timestamps stored as ISO text, many rows per INSERT on the
sqlite3 connection itself, and a bigger page cache with rarer WAL checkpoints while a
load runs."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from itertools import chain
from typing import Any

from django.db import connection

from tether.datasets.dialects.base import ROW_KEY, ByColumn, Dialect, Rows, column_list, q

ROWS_PER_INSERT = 512


class SQLite(Dialect):
    name = "sqlite"
    max_columns = 1999  # SQLITE_MAX_COLUMN is 2000 unless SQLite was built otherwise
    types = {
        "integer": "INTEGER",
        "float": "REAL",
        "boolean": "INTEGER",
        "date": "TEXT",
        "timestamp": "TEXT",
        "timestamptz": "TEXT",
        "text": "TEXT",
    }
    key_ddl = f"{ROW_KEY} INTEGER PRIMARY KEY"
    dates_as_text = True

    def row_too_big(self, exc: BaseException) -> str | None:
        # SQLITE_TOOBIG: a row (or a cell) longer than SQLITE_LIMIT_LENGTH (1e9 bytes)
        for err in (exc, exc.__cause__):  # (Django wraps the driver's error)
            if getattr(err, "sqlite_errorname", None) == "SQLITE_TOOBIG" or (
                isinstance(err, sqlite3.DataError) and "too big" in str(err)
            ):
                return str(err)
        return None

    def date_param(self, day: date) -> Any:
        return day.isoformat()

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """While a load runs, this connection keeps more pages in memory (32 MiB) and
        checkpoints its write-ahead log less often (every 8 MB instead of 4 MB), so
        fewer pages are written twice and synced; both are put back afterwards. (Not
        more: a checkpoint runs in the commit of the batch that passes the mark, and a
        pause during the import waits for that commit; one of 80 MB took up to a
        quarter of a second.)"""
        with connection.cursor() as cur:
            cur.execute("PRAGMA cache_size")
            cache = int(cur.fetchone()[0])
            cur.execute("PRAGMA wal_autocheckpoint")
            every = int(cur.fetchone()[0])
            cur.execute("PRAGMA cache_size = -32768")
            cur.execute("PRAGMA wal_autocheckpoint = 2000")
        try:
            yield
        finally:
            with connection.cursor() as cur:
                cur.execute(f"PRAGMA cache_size = {cache}")
                cur.execute(f"PRAGMA wal_autocheckpoint = {every}")

    def insert(
        self, table: str, columns: Sequence[dict[str, str]], rows: Rows, ready: bool
    ) -> None:
        if ready and isinstance(rows, ByColumn):  # interleaved straight into one list
            width = len(columns)
            flat: list[Any] = [None] * (len(rows) * width)
            for i, values in enumerate(rows.values):
                flat[i::width] = values
            _insert_flat(table, columns, flat)
            return
        if isinstance(rows, ByColumn):
            rows = rows.rows()
        if not ready:
            rows = [[_stored(v) for v in row] for row in rows]
        _insert_flat(table, columns, list(chain.from_iterable(rows)))


def _insert_flat(table: str, columns: Sequence[dict[str, str]], flat: list[Any]) -> None:
    """Rows given as one flat list of values, row after row: many rows per INSERT
    statement (one statement step instead of one per row), on the sqlite3 connection
    itself (no placeholder rewriting per statement). Statements have power-of-two row
    counts, so the few there are stay prepared in the connection's statement cache."""
    width = len(columns)
    limit = 32766 if sqlite3.sqlite_version_info >= (3, 32) else 999  # host parameters
    most = 1 << (min(ROWS_PER_INSERT, limit // width).bit_length() - 1)
    one = "(" + ", ".join(["?"] * width) + ")"
    head = f"INSERT INTO {q(table)} ({column_list(columns)}) VALUES "
    connection.ensure_connection()
    cur = connection.connection.cursor()
    try:
        at, rows = 0, len(flat) // width
        while rows:
            per = min(most, 1 << (rows.bit_length() - 1))  # rows per statement
            statement = head + ", ".join([one] * per)
            step = per * width
            whole = (rows // per) * step
            for i in range(at, at + whole, step):
                cur.execute(statement, flat[i : i + step])
            at += whole
            rows -= whole // width
    finally:
        cur.close()


def _stored(value: Any) -> Any:
    """A value as SQLite stores it (dates and timestamps as ISO text)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
