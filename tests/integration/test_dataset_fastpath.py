"""The import's fast paths (raw CSV into PostgreSQL's COPY; column-wise conversion on
SQLite and MariaDB) give exactly what the per-cell path (csv module + PARSERS, record by
record) gives: the same rows, or the same failure naming the same line. Run on each test
database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from tests.integration.test_datasets import rows_of, run_import, user
from tether.datasets import generate, loader, raw_copy
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Task

pytestmark = pytest.mark.usefixtures("datasets_cleaned")


def generated(rows: int, seed: int = 11) -> str:
    buf = io.StringIO()
    generate.write(buf, rows, seed=seed)
    return buf.getvalue()


def declared(*kinds: str) -> list[dict[str, str]]:
    return [{"name": f"c{i}", "type": k} for i, k in enumerate(kinds, start=1)]


def header(n: int) -> str:
    return ",".join(f"c{i}" for i in range(1, n + 1)) + "\n"


def with_bad_date(rows: int, at: int) -> str:
    """Generated rows with an impossible (but ISO-shaped) ship_date on data row ``at``."""
    records = list(generate.rows(rows, seed=13))
    records[at - 1][7] = "2023-02-29"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(generate.HEADER)
    writer.writerows(records)
    return buf.getvalue()


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("generated", generated(3000), {}),
    (
        "null tokens",
        header(4) + '1,NA,2.5,2024-01-01\n2,"NA",NULL,\n3,"","","NULL"\n4,x,,2024-01-02\n',
        {"columns": declared("integer", "text", "float", "date")},
    ),
    (
        "quoted numbers",
        header(2) + '"1","2.5"\n2,3\n"-3",".5"\n',
        {"columns": declared("integer", "float")},
    ),
    ("quote inside a field", header(2) + '1,x"y\n2,z\n3,"a ""b"""\n', {}),
    (
        "hour 24",
        header(1) + "2024-01-01T10:00:00Z\n2024-01-01T24:00:00Z\n",
        {"columns": declared("timestamptz")},
    ),
    (
        "second 60",
        header(1) + "2024-01-01 10:00:00\n2024-06-30 23:59:60\n",
        {"columns": declared("timestamp")},
    ),
    ("blanks around an integer", header(1) + "1\n 2\n", {"columns": declared("integer")}),
    ("19 digits", header(1) + "1\n1234567890123456789\n", {"columns": declared("integer")}),
    ("Infinity", header(1) + "1.5\nInfinity\n", {"columns": declared("float")}),
    ("inf", header(1) + "1.5\ninf\n-1e3\n", {"columns": declared("float")}),
    ("on", header(1) + "true\non\n", {"columns": declared("boolean")}),
    ("yes no", header(1) + "Yes\nN\n1\n0\nf\n", {"columns": declared("boolean")}),
    ("crlf", header(2).replace("\n", "\r\n") + '1,x\r\n2,"y\r\nz"\r\n', {}),
    ("mixed line ends", header(2) + "1,x\r\n2,y\n3,z\r4,w\n", {}),
    ("blank lines", header(2) + "1,x\n\n2,y\n\n", {}),
    ("end-of-data marker", header(1) + "x\n\\.\ny\n", {"columns": declared("text")}),
    ("impossible date", header(1) + "2024-01-01\n2023-02-29\n", {"columns": declared("date")}),
    ("year 0", header(1) + "2024-01-01\n0000-01-01\n", {"columns": declared("date")}),
    (
        "naive time, zoned column",
        header(1) + "2024-01-01T10:00:00Z\n2024-01-01T10:00:00\n",
        {"columns": declared("timestamptz")},
    ),
    (
        "zoned time, naive column",
        header(1) + "2024-01-01T10:00:00\n2024-01-01T10:00:00+02:00\n",
        {"columns": declared("timestamp")},
    ),
    ("other date style", header(1) + "2024-01-01\n01/02/2024\n", {"columns": declared("date")}),
    ("ragged", header(2) + "1,2\n3\n4,5,6\n", {"columns": declared("integer", "integer")}),
    ("nul byte", header(1) + "x\ny\x00z\n", {"columns": declared("text")}),
    ("non-ascii", 'name,n\nZoë,1\nŁukasz,2\n"Søren, Müller",3\n', {}),
    ("no final newline", header(2) + "1,2\n3,4", {}),
    ("semicolons", 'a;b\n1;x,y\n2;"z;w"\n', {"delimiter": ";"}),
    (
        "custom nulls",
        header(2) + "1,-\n-,x\n,y\n",
        {"null_values": ["-"], "columns": declared("integer", "text")},
    ),
    (
        "skip bad rows",
        header(2) + "1,2024-01-01\nx,2024-01-02\n3,2024-02-30\n4,\n5,no\n",
        {"columns": declared("integer", "date"), "on_error": "skip"},
    ),
]


def outcome(owner: Any, text: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    done = run_import(owner, text, dataset=name, **params)
    if done.status != "succeeded":
        return {"status": done.status, "error": done.error}
    ds = Dataset.objects.get(owner=owner, name=name)
    assert done.result is not None
    result = {k: v for k, v in done.result.items() if k not in ("dataset", "seconds")}
    return {"status": done.status, "result": result, "rows": rows_of(ds)}


def per_cell_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(raw_copy.RawBlocks, "count", lambda self, block: None)
    monkeypatch.setattr(loader.Loader, "_columns", lambda self, block: None)


@pytest.mark.parametrize(
    ("text", "params"), [(t, p) for _, t, p in CASES], ids=[c[0] for c in CASES]
)
def test_fast_paths_equal_the_per_cell_path(
    executor: EmbeddedExecutor, text: str, params: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    me = user()
    fast = outcome(me, text, "fast", params)
    per_cell_only(monkeypatch)
    slow = outcome(me, text, "slow", params)
    assert fast == slow


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_refused_value_deep_in_a_batch(
    executor: EmbeddedExecutor, on_error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value only the database refuses (an impossible date with an ISO shape) after
    many good rows: the batch is rolled back and redone cell by cell, which names the
    line (or skips it)."""
    text = with_bad_date(30_000, 25_000)
    me = user()
    fast = outcome(me, text, "fast", {"on_error": on_error})
    per_cell_only(monkeypatch)
    slow = outcome(me, text, "slow", {"on_error": on_error})
    assert fast == slow
    if on_error == "fail":
        assert fast["status"] == "failed" and "line" in fast["error"]
    else:
        assert fast["result"]["skipped_count"] == 1 and len(fast["rows"]) == 29_999


def test_many_small_batches(executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "BATCH_ROWS", 150)
    text = generated(5000, seed=12)
    me = user()
    done = run_import(me, text, dataset="small")
    assert done.status == "succeeded", done.error
    rows = rows_of(Dataset.objects.get(name="small"))
    assert [r[0] for r in rows] == list(range(1, 5001))
    checkpoint = Task.objects.get(pk=done.pk).checkpoint
    assert checkpoint is not None and checkpoint["consumed"] == 5000


@pytest.mark.parametrize("field_limit", [None, 64 << 10])
def test_plain_data_takes_the_fast_path(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch, settings: Any, field_limit: Any
) -> None:
    """Generated data (quotes, commas, line breaks, empty cells) is not sent down the
    per-cell path: raw COPY on PostgreSQL, column-wise conversion elsewhere; also with
    a field limit (TETHER_CSV_MAX_FIELD_BYTES) smaller than the blocks."""
    from django.db import connection

    if field_limit:
        settings.TETHER = {**settings.TETHER, "CSV_MAX_FIELD_BYTES": field_limit}

    taken: list[str] = []
    raw, columns, cells = (
        raw_copy.RawBlocks.count,
        loader.Loader._columns,
        loader.Loader._cells,
    )

    def spy(name: str, real: Any) -> Any:
        def call(self: Any, *args: Any) -> Any:
            result = real(self, *args)
            if name == "cells" or result is not None:
                taken.append(name)
            return result

        return call

    monkeypatch.setattr(raw_copy.RawBlocks, "count", spy("raw", raw))
    monkeypatch.setattr(loader.Loader, "_columns", spy("columns", columns))
    monkeypatch.setattr(loader.Loader, "_cells", spy("cells", cells))
    done = run_import(user(), generated(20_000, seed=14), dataset="fast")
    assert done.status == "succeeded", done.error
    expected = "raw" if connection.vendor == "postgresql" else "columns"
    assert taken and set(taken) == {expected}


def test_a_stray_quote_does_not_grow_blocks_without_bound(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quote inside an unquoted field upsets the quote parity that finds where blocks
    of whole records end: blocks stop growing at BLOCK_LIMIT, and the rows are still
    exactly those of the csv module (which takes such a quote as a character)."""
    from tether.datasets import files

    monkeypatch.setattr(files, "BLOCK_LIMIT", 1 << 16)
    sizes: list[int] = []
    real = files.Source.block

    def spy(self: files.Source, size: int) -> bytes:
        block = real(self, size)
        sizes.append(len(block))
        return block

    monkeypatch.setattr(files.Source, "block", spy)
    n = 250_000  # 3 MB: more than one block everywhere
    text = header(2) + '0,x"y\n' + "".join(f"{i},v{i}\n" for i in range(1, n))
    done = run_import(user(), text, dataset="stray")
    assert done.status == "succeeded", done.error
    rows = rows_of(Dataset.objects.get(name="stray"))
    assert rows[0] == (0, 'x"y') and rows[1:] == [(i, f"v{i}") for i in range(1, n)]
    assert len(sizes) > 2 and max(sizes) <= 2 * max(loader.BLOCK_BYTES, 1 << 16)
