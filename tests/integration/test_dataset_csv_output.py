"""Exports are well-formed CSV (RFC 4180 quoting) that imports back to the same table,
and the formula guard leaves no cell that a spreadsheet would run. A seeded property
test over random text cells, on each test database (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

import pytest

from tests.integration.conftest import wait_status
from tests.integration.test_datasets import rows_of, run_import, user
from tether import service
from tether.datasets import exporter
from tether.datasets.files import export_path
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset

pytestmark = pytest.mark.usefixtures("datasets_cleaned")

FORMULA = ("=", "+", "-", "@")
# what a reader may not see before a formula: any whitespace, format characters (Cf:
# zero-width, soft hyphen, bidirectional controls, tags), the combining grapheme joiner
# and the Hangul fillers
BLANK = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
BLANK += "\u180e\u200b\u200c\u200d\u2060\ufeff\u00ad\u200e\u200f\u202a\u202e\u2066\u2069"
BLANK += "\u061c\u2064\ufff9\U000e0001\U000e0041\U0001d173\u034f\u115f\u1160\u3164\uffa0"
PIECES = [
    *("\r", "\n", "\r\n", "\n\r", '"', '""', ",", ";", "|", "\t", "'", "\\", "\\.", "\\N"),
    *("=1+1", "-2", "+3", "@SUM(A1)", '=HYPERLINK("http://x","y")', "NA", "NULL", "0"),
    *("a", "word", "x y", "é", "日本語", "😀", "Ω≈ç", "\u00a0", "\u3000", "\u2028", "\u200b"),
    *("\ufeff", "\x0b", "\x1f", "\x7f", "true", "2024-01-01"),
]
DEFAULT_NULLS = ("", "NA", "NULL")


def random_cell(rng: random.Random) -> str:
    """Often empty or a null token; else optional leading blanks, an optional formula
    character, then random pieces (line breaks, quotes, delimiters, unicode …)."""
    if rng.random() < 0.08:
        return rng.choice(["", "", "NA", "NULL", " "])
    lead = "".join(rng.choice(BLANK) for _ in range(rng.choice([0, 0, 1, 2, 3])))
    first = rng.choice(FORMULA) if rng.random() < 0.4 else ""
    return lead + first + "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6)))


def source_csv(header: list[str], rows: list[list[str]]) -> str:
    # (CRLF line ends: the csv module then quotes every field holding CR or LF)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
    return buf.getvalue()


def formula_like(cell: str) -> bool:
    """What the guard must catch: a formula character first once leading blanks are
    skipped; or a tab or CR first (they, too, start formulas in some spreadsheets)."""
    return cell.startswith(("\t", "\r")) or cell.lstrip(BLANK).startswith(FORMULA)


def export(owner: Any, dataset: str, raw: bool) -> str:
    task = service.submit(owner, "csv_export", {"dataset": dataset, "raw": raw})
    done = wait_status(task.pk, "succeeded", "failed", timeout=60)
    assert done.status == "succeeded", done.error
    return export_path(task.pk).read_bytes().decode()


def reimport(owner: Any, text: str, dataset: str, columns: list[dict[str, str]]) -> list[Any]:
    done = run_import(owner, text, dataset=dataset, columns=columns)
    assert done.status == "succeeded", done.error
    return rows_of(Dataset.objects.get(name=dataset))


@pytest.mark.parametrize(("seed", "texts", "rows"), [(1, 3, 1000), (2, 1, 600), (3, 5, 500)])
def test_random_text_survives_import_export_import(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch, seed: int, texts: int, rows: int
) -> None:
    """Import → export → import gives the same table. With ``raw`` the round trip is
    exact; without, exactly the cells that look like formulas come back with a leading
    ``'`` (and no exported cell still looks like one). Several pages per export."""
    monkeypatch.setattr(exporter, "PAGE_ROWS", 61)
    monkeypatch.setattr(exporter, "SELECT_PAGE_ROWS", 61)
    rng = random.Random(seed)
    with_id = texts > 1  # (and a one-column dataset: an empty line there is a null)
    header = (["id"] if with_id else []) + [f"t{i}" for i in range(1, texts + 1)]
    columns = [{"name": n, "type": "integer" if n == "id" else "text"} for n in header]
    cells = [
        ([str(r)] if with_id else []) + [random_cell(rng) for _ in range(texts)]
        for r in range(rows)
    ]
    me = user()
    first = reimport(me, source_csv(header, cells), "source", columns)
    expected = [
        tuple(
            int(c) if with_id and i == 0 else (None if c in DEFAULT_NULLS else c)
            for i, c in enumerate(row)
        )
        for row in cells
    ]
    assert first == expected  # the import itself reads every cell as written

    exact = export(me, "source", raw=True)
    parsed = list(csv.reader(io.StringIO(exact, newline="")))
    assert parsed[0] == header and len(parsed) == rows + 1  # no record split or merged
    assert reimport(me, exact, "exact", columns) == first

    guarded = export(me, "source", raw=False)
    parsed = list(csv.reader(io.StringIO(guarded, newline="")))
    assert parsed[0] == header and len(parsed) == rows + 1
    text_at = 1 if with_id else 0
    offenders = [c for row in parsed[1:] for c in row[text_at:] if formula_like(c)]
    assert not offenders, offenders[:5]
    neutralised = [
        tuple(
            "'" + v if isinstance(v, str) and i >= text_at and formula_like(v) else v
            for i, v in enumerate(row)
        )
        for row in first
    ]
    assert neutralised != first  # (the generator made some formulas)
    assert reimport(me, guarded, "guarded", columns) == neutralised


@pytest.mark.parametrize("raw", [True, False])
def test_a_cell_holding_cr_is_quoted(executor: EmbeddedExecutor, raw: bool) -> None:
    """The reported case: ``5,'\\r=1+1,7`` was written with the CR bare, so a reader saw
    a second record starting with a live ``=1+1``. (Without ``raw``, ``\\r=1+1`` itself
    gets the leading ``'``; the cell that has one already is left alone.)"""
    me = user()
    text = 'a,b,c,d\r\n5,"\'\r=1+1",7,"\r=1+1"\r\n'
    columns = [{"name": n, "type": t} for n, t in zip("abcd", ["integer", "text"] * 2, strict=True)]
    reimport(me, text, "cr", columns)
    guarded = '"\r=1+1"' if raw else '"\'\r=1+1"'
    assert export(me, "cr", raw=raw) == f'a,b,c,d\n5,"\'\r=1+1",7,{guarded}\n'


def test_empty_strings_and_nulls_export_alike_on_every_database(executor: EmbeddedExecutor) -> None:
    """As PostgreSQL's COPY writes them, byte for byte: an empty string is ``""``, a null
    an empty field (a lone null, too, is ``""``: an empty line is skipped by readers).
    Imported back with the default null values, both are null; without "" among them,
    both are empty strings (a reader cannot tell ``,"",`` from ``,,``)."""
    me = user()
    text = 'id,t,u\n16,"",x\n17,NA,x\n18,,\n'
    columns = [{"name": n, "type": t} for n, t in (("id", "integer"), ("t", "text"), ("u", "text"))]
    done = run_import(me, text, dataset="empty", columns=columns, null_values=["NA"])
    assert done.status == "succeeded", done.error
    assert rows_of(Dataset.objects.get(name="empty")) == [
        (16, "", "x"),
        (17, None, "x"),
        (18, "", ""),
    ]
    with_null = 'id,t,u\n16,"",x\n17,,x\n18,"",""\n'
    assert export(me, "empty", raw=False) == with_null
    assert export(me, "empty", raw=True) == with_null
    assert reimport(me, with_null, "back", columns) == [
        (16, None, "x"),
        (17, None, "x"),
        (18, None, None),
    ]
    done = run_import(me, with_null, dataset="kept", columns=columns, null_values=["NA"])
    assert done.status == "succeeded", done.error
    assert rows_of(Dataset.objects.get(name="kept")) == [(16, "", "x"), (17, "", "x"), (18, "", "")]
    done = run_import(me, 't\n""\nNA\nz\n', dataset="one", null_values=["NA"])
    assert done.status == "succeeded", done.error
    assert export(me, "one", raw=False) == 't\n""\n""\nz\n'
