"""Dataset tables in the Tether database: create, bulk-load, publish, read, drop.

Table and column names never come from input as such: tables are server-generated
(``tds_<hex>`` for datasets, ``tstg_<task id>`` for an import's staging table) and
column names are checked by ``types.clean_names`` and always quoted. Each table has a
hidden ``_rid`` row key (insertion order) used to page exports and previews.

What a database does its own way (COPY on PostgreSQL, multi-row inserts on SQLite, …)
is in its class in ``dialects``; these functions are what the rest of the datasets
code calls, whatever the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import IO, Any

from django.db import connection

from tether.datasets.dialects import dialect
from tether.datasets.dialects.base import ROW_KEY, Rows, column_list, q


def new_table_name() -> str:
    return f"tds_{uuid.uuid4().hex[:16]}"


def staging_name(task_id: int) -> str:
    return f"tstg_{int(task_id)}"


def create_table(table: str, columns: Sequence[dict[str, str]], *, key: bool = True) -> None:
    """A table with the row key first. ``key=False``: the row key gets its values but,
    where that is cheaper (PostgreSQL), no index yet (``add_key`` builds it later)."""
    dialect().create_table(table, columns, key=key)


def add_key(table: str, should_stop: Callable[[], bool] | None = None) -> None:
    """Make the row key the primary key of a table created with ``key=False`` (an index
    build: interruptible)."""
    dialect().add_key(table, should_stop)


def fresh_keys(table: str) -> None:
    """Make this session's next row keys for ``table`` larger than any handed out so
    far, in any session (see ``PostgreSQL.fresh_keys``)."""
    dialect().fresh_keys(table)


def interruptible(should_stop: Callable[[], bool] | None) -> AbstractContextManager[None]:
    """Cancel the statements run in the block as soon as ``should_stop()`` is true and
    raise errors.Interrupted instead of their error (PostgreSQL; elsewhere they run to
    their end)."""
    return dialect().interruptible(should_stop)


def bulk_load() -> AbstractContextManager[None]:
    """Connection settings that make a long load cheaper, put back afterwards."""
    return dialect().bulk_load()


def relaxed_commit() -> None:
    """This transaction's commit need not wait for its log to reach disk (where the
    database allows: PostgreSQL)."""
    dialect().relaxed_commit()


def drop_table(table: str) -> None:
    with connection.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {q(table)}")


def table_exists(table: str) -> bool:
    with connection.cursor() as cur:
        return table in connection.introspection.table_names(cur)


def rename(src: str, dst: str) -> None:
    dialect().rename(src, dst)


def insert(
    table: str, columns: Sequence[dict[str, str]], rows: Rows, *, ready: bool = False
) -> None:
    """Append parsed rows (Python values, None for null), row by row or ByColumn.
    ``ready``: the values are already in the form SQLite stores (dates and timestamps
    as ISO text)."""
    if len(rows):
        dialect().insert(table, columns, rows, ready)


def append(
    src: str,
    dst: str,
    columns: Sequence[dict[str, str]],
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Copy every row of ``src`` into ``dst`` (in ``src`` order); returns the count.
    Interruptible (see ``interruptible``)."""
    names = column_list(columns)
    fresh_keys(dst)
    with interruptible(should_stop), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {q(dst)} ({names}) SELECT {names} FROM {q(src)} ORDER BY {ROW_KEY}"
        )
        return int(cur.rowcount)


def count(
    table: str,
    *,
    date_column: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> int:
    where, args = dialect().where(date_column, start, end, 0)
    with connection.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {q(table)} WHERE {where}", args)
        return int(cur.fetchone()[0])


def max_key(table: str) -> int:
    """The largest row key in ``table`` (0 when empty)."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT MAX({ROW_KEY}) FROM {q(table)}")
        return int(cur.fetchone()[0] or 0)


def delete_rows(table: str, *, after: int, upto: int) -> int:
    """Delete the rows with row keys in (after, upto]; returns how many."""
    with connection.cursor() as cur:
        cur.execute(
            f"DELETE FROM {q(table)} WHERE {ROW_KEY} > %s AND {ROW_KEY} <= %s", [after, upto]
        )
        return int(cur.rowcount)


def read_page(
    table: str,
    columns: Sequence[dict[str, str]],
    *,
    after: int = 0,
    limit: int = 1000,
    date_column: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> list[tuple[Any, ...]]:
    """Rows with their row key first, in insertion order, after row key ``after``."""
    return dialect().read_page(
        table, columns, after=after, limit=limit, date_column=date_column, start=start, end=end
    )


def export_page(
    out: IO[bytes],
    table: str,
    columns: Sequence[dict[str, str]],
    *,
    after: int,
    limit: int,
    raw: bool,
    date_column: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> tuple[int, int]:
    """Append up to ``limit`` rows after row key ``after`` to ``out`` as CSV; returns
    (rows written, the row key up to which every row is written)."""
    return dialect().export_page(
        out,
        table,
        columns,
        after=after,
        limit=limit,
        raw=raw,
        date_column=date_column,
        start=start,
        end=end,
    )


def iter_rows(
    table: str, columns: Sequence[dict[str, str]], page: int = 5000
) -> Iterator[tuple[Any, ...]]:
    """Every row (without the row key), in insertion order."""
    after = 0
    while True:
        rows = read_page(table, columns, after=after, limit=page)
        if not rows:
            return
        for row in rows:
            yield row[1:]
        after = int(rows[-1][0])
