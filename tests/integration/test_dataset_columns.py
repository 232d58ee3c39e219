"""The column limit (TETHER_CSV_MAX_COLUMNS, and at most as many as a table can have
in the database): a file with more columns is refused at upload with 400
too_many_columns, a later record with more fields fails its import naming the line (a
data error: no retries), and as many columns as the limit allows import everywhere.
Whether a row fits depends on its cells: one the database refuses as too big fails the
import as a data error, naming where."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.backends.signals import connection_created

from tests.integration.conftest import dataset_tables, wait_status
from tests.integration.test_datasets_api import (
    API,
    Client,
    err,
    imported,
    nothing_created,
    upload,
    uploads_left,
)
from tether.datasets.dialects import dialect
from tether.datasets.files import max_columns
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset

pytestmark = pytest.mark.usefixtures("datasets_cleaned")


def row(n: int, cell: str) -> str:
    return ",".join([cell] * n) + "\n"


def test_a_file_with_too_many_columns_is_refused_at_upload(client_for: Client) -> None:
    c = client_for("alice")
    most = max_columns()
    header = ",".join(f"c{i}" for i in range(most + 1)) + "\n"
    e = err(upload(c, header + row(most + 1, "1"), dataset="wide"), 400)
    assert e["code"] == "too_many_columns", e
    assert f"line 1: {most + 1:,} fields or more" in e["message"], e
    assert f"at most {most:,} columns (TETHER_CSV_MAX_COLUMNS)" in e["message"], e
    # without a header: the first record's fields, also when it is longer than what
    # the upload check reads (20,000 columns: PostgreSQL stores at most 1,600)
    e = err(upload(c, row(20_000, "ab"), dataset="wide", header="false"), 400)
    assert e["code"] == "too_many_columns" and "line 1: " in e["message"], e
    e = err(upload(c, "ab," * 1_000_000 + "\n", dataset="wide", header="false"), 400)
    assert e["code"] == "too_many_columns", e
    nothing_created()


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_later_record_with_too_many_fields_fails_the_import_once(
    client_for: Client, executor: EmbeddedExecutor, on_error: str
) -> None:
    c = client_for("alice")
    body = "a,b\n1,2\n" * 10 + row(max_columns() + 1, "x") + "3,4\n"
    r = upload(c, body, dataset="late", on_error=on_error)
    assert r.status_code == 201, r.content
    task = wait_status(r.json()["id"], "succeeded", "failed", timeout=60)
    assert task.status == "failed", task.result
    assert task.attempts == 1, task.attempts  # a data error: not tried again
    assert f"line 21: {max_columns() + 1:,} fields or more" in task.error, task.error
    assert not Dataset.objects.exists()
    assert c.get(f"{API}/datasets").json() == []


def test_500_integer_columns_import(client_for: Client, executor: EmbeddedExecutor) -> None:
    """Refused before (the limit was 380 on PostgreSQL, 190 on MariaDB/MySQL), though
    a row of 500 integers fits in every database."""
    c = client_for("alice")
    header = ",".join(f"c{i}" for i in range(500)) + "\n"
    body = "".join(",".join(str(r * 1000 + i) for i in range(500)) + "\n" for r in range(50))
    imported(c, header + body, dataset="ints")
    ds = Dataset.objects.get(name="ints")
    assert len(ds.columns) == 500 and ds.row_count == 50
    assert {col["type"] for col in ds.columns} == {"integer"}
    page = c.get(f"{API}/datasets/ints/rows", {"limit": 1, "offset": 49}).json()
    assert page["rows"][0][-1] == 49_499, page


@pytest.fixture
def _no_column_setting(settings: Any) -> None:
    """TETHER_CSV_MAX_COLUMNS above what any database takes: the dialect's limit holds."""
    settings.TETHER = {**settings.TETHER, "CSV_MAX_COLUMNS": 100_000}


@pytest.mark.usefixtures("_no_column_setting")
def test_the_structural_maximum_imports_and_one_more_is_refused_at_upload(
    client_for: Client, executor: EmbeddedExecutor
) -> None:
    """As many columns as a table can have here, less the row key (PostgreSQL 1,599,
    SQLite 1,999, MariaDB/MySQL 1,016) import when their cells are short; one more is
    400 too_many_columns at upload, naming the limit."""
    c = client_for("alice")
    most = dialect().max_columns
    assert max_columns() == most
    assert most == {"postgresql": 1599, "sqlite": 1999, "mysql": 1016}[connection.vendor]
    header = ",".join(f"c{i}" for i in range(most)) + "\n"
    imported(c, header + row(most, "x") + row(most, "") + row(most, "y"), dataset="widest")
    ds = Dataset.objects.get(name="widest")
    assert len(ds.columns) == most and ds.row_count == 3
    page = c.get(f"{API}/datasets/widest/rows", {"limit": 1}).json()
    assert page["rows"][0][-1] == "x", page
    wider = ",".join(f"c{i}" for i in range(most + 1)) + "\n"
    e = err(upload(c, wider + row(most + 1, "x"), dataset="wider"), 400)
    assert e["code"] == "too_many_columns", e
    assert f"at most {most:,} columns" in e["message"], e
    assert not Dataset.objects.filter(name="wider").exists()


def cells(r: int, width: int, size: int) -> str:
    """A record of ``width`` distinct cells of ``size`` characters, hex digits after
    an x (which do not compress: PostgreSQL would otherwise keep them small)."""

    def cell(i: int) -> str:
        parts = (hashlib.sha256(f"{r}.{i}.{k}".encode()).hexdigest() for k in range(size // 64 + 1))
        return "x" + "".join(parts)[: size - 1]

    return ",".join(cell(i) for i in range(width)) + "\n"


@pytest.fixture
def _small_sqlite_rows() -> Iterator[None]:
    """SQLite refuses a row longer than SQLITE_LIMIT_LENGTH (1e9 bytes unless lowered):
    lowered to 200 kB on the connections the workers open, so a 300 kB row shows it."""
    if connection.vendor != "sqlite":
        yield
        return

    def lower(sender: Any, connection: Any, **kwargs: Any) -> None:
        connection.connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 200_000)

    connection_created.connect(lower)
    try:
        yield
    finally:
        connection_created.disconnect(lower)


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_row_too_wide_for_the_database_fails_the_import_once(
    client_for: Client, _small_sqlite_rows: None, executor: EmbeddedExecutor, on_error: str
) -> None:
    """A row the database refuses as too big (PostgreSQL's 8 KB page, InnoDB's 8,126
    bytes, SQLite's length limit) fails the import as a data error, naming where: no
    retries (it failed three times with a raw database error), the staging table and
    the upload gone, and nothing internal in the message."""
    c = client_for("alice")
    width, size = {"postgresql": (500, 100), "mysql": (500, 40), "sqlite": (300, 1000)}[
        connection.vendor
    ]
    header = ",".join(f"c{i}" for i in range(width)) + "\n"
    fits = ",".join(["a"] * width) + "\n"
    body = header + fits * 5 + "".join(cells(r, width, size) for r in range(3))
    r = upload(c, body, dataset="toowide", on_error=on_error)
    assert r.status_code == 201, r.content
    task = wait_status(r.json()["id"], "succeeded", "failed", timeout=120)
    assert task.status == "failed", task.result
    assert task.attempts == 1, (task.attempts, task.error)  # a data error: not tried again
    name = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}.get(connection.vendor, "M")
    assert "a row at or after line " in task.error, task.error
    assert f" is too wide for {name}" in task.error, task.error
    assert "fewer or shorter columns would fit" in task.error, task.error
    reason = {
        "postgresql": "(row is too big: size ",
        "mysql": "(Row size too large (> ",
        "sqlite": "(string or blob too big)",
    }[connection.vendor]
    assert reason in task.error, task.error
    line = int(task.error.split("at or after line ")[1].split(" ")[0])
    assert 2 <= line <= 7, task.error  # (the file's rows 6-8 are on lines 7-9)
    assert "tstg_" not in task.error and "tds_" not in task.error, task.error
    assert dataset_tables() == set()
    assert not Dataset.objects.exists()
    assert uploads_left() == []
