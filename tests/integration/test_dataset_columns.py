"""The column limit (TETHER_CSV_MAX_COLUMNS, and at most what the database can store
in a row): a file with more columns is refused at upload with 400 too_many_columns, a
later record with more fields fails its import naming the line (a data error: no
retries), and a dataset of as many columns as the limit allows imports everywhere."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.conftest import wait_status
from tests.integration.test_datasets_api import (
    API,
    Client,
    dataset_tables,
    err,
    imported,
    nothing_created,
    upload,
)
from tether.datasets import sql
from tether.datasets.files import data_dir, max_columns
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset


@pytest.fixture(autouse=True)
def _clean_up(transactional_db: None) -> Iterator[None]:
    yield
    for kind in ("uploads", "exports"):
        shutil.rmtree(data_dir(kind), ignore_errors=True)
    for table in dataset_tables():
        sql.drop_table(table)


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


# the widest rows: 20-byte cells stay in a PostgreSQL row, 40-byte ones in an InnoDB row
@pytest.mark.parametrize("cell", ["7", "x" * 20, "x" * 40])
def test_as_many_columns_as_the_limit_allows_import(
    client_for: Client, executor: EmbeddedExecutor, cell: str
) -> None:
    """The limit is what the database can always store: 1,000 integer columns do not
    fit in an InnoDB row, nor 400 text columns of 20-byte cells in a PostgreSQL one."""
    c = client_for("alice")
    most = max_columns()
    header = ",".join(f"c{i}" for i in range(most)) + "\n"
    imported(c, header + row(most, cell) * 3, dataset="widest")
    ds = Dataset.objects.get(name="widest")
    assert len(ds.columns) == most and ds.row_count == 3
    page = c.get(f"{API}/datasets/widest/rows", {"limit": 1}).json()
    assert len(page["rows"][0]) >= most, page
