"""The export's CSV writing and formula guard (pure logic; the same on every database
is checked by tests/integration/test_dataset_csv_output.py)."""

from __future__ import annotations

import csv
import io

import pytest

from tether.datasets.csv_output import CsvLines, formula_like


def written(*rows: list[str]) -> str:
    lines = CsvLines()
    csv.writer(lines, lineterminator="\r\n").writerows(rows)
    return lines.text()


def test_cells_with_cr_lf_comma_or_quote_are_quoted_and_records_end_with_lf() -> None:
    text = written(["5", "'\r=1+1", "7"], ["a\nb", "x\r\ny", 'say "hi"', "c,d", "plain"])
    assert text == '5,"\'\r=1+1",7\n"a\nb","x\r\ny","say ""hi""","c,d",plain\n'
    assert list(csv.reader(io.StringIO(text, newline=""))) == [
        ["5", "'\r=1+1", "7"],
        ["a\nb", "x\r\ny", 'say "hi"', "c,d", "plain"],
    ]
    assert written() == ""
    assert written([""]) == '""\n'  # (a lone empty cell is not a blank line)


FORMULAS = ["=1+1", "+1", "-2", "@SUM(A1)", " =1", "\u00a0\u3000-x", "\n=1", "\r\n+1"]
FORMULAS += ["\u200b@x", "\t", "\r", "\tword", "\rword", " \t\u2028\ufeff=HYPERLINK()"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_like(cell: str) -> None:
    assert formula_like(cell)


@pytest.mark.parametrize("cell", ["", " ", "word", "'=1", "a=1", "1-2", " x-1", "\n", "é=", "日本"])
def test_not_formula_like(cell: str) -> None:
    assert not formula_like(cell)
