"""The export's CSV writing and formula guard (pure logic; the same on every database
is checked by tests/integration/test_dataset_csv_output.py)."""

from __future__ import annotations

import csv
import io

import pytest

from tether.datasets.csv_output import CsvLines, export_cell, formula_like


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


def test_an_empty_string_is_quoted_and_a_null_is_an_empty_field() -> None:
    """As PostgreSQL's COPY writes them (``16,"",x`` and ``17,,x``)."""
    cells = [
        [export_cell(v, k, raw=False) for v, k in row]
        for row in (
            [(16, "integer"), ("", "text"), ("x", "text")],
            [(17, "integer"), (None, "text"), ("x", "text")],
            [("", "text"), ("", "text")],
        )
    ]
    assert written(*cells) == '16,"",x\n17,,x\n"",""\n'
    assert written([export_cell("", "text", raw=True)], [export_cell(None, "text", raw=True)]) == (
        '""\n""\n'
    )


FORMULAS = ["=1+1", "+1", "-2", "@SUM(A1)", " =1", "\u00a0\u3000-x", "\n=1", "\r\n+1"]
FORMULAS += ["\u200b@x", "\t", "\r", "\tword", "\rword", " \t\u2028\ufeff=HYPERLINK()"]
# invisible format characters (soft hyphen, bidi marks and isolates, tags), the
# combining grapheme joiner and the Hangul fillers
INVISIBLE = ["\u00ad", "\u200e", "\u202e", "\u2066", "\u034f", "\u115f", "\u1160", "\u3164"]
INVISIBLE += ["\uffa0", "\u061c", "\u2064", "\ufff9", "\U000e0001", "\U000e0041", "\U0001d173"]
FORMULAS += [c + "=1+1" for c in INVISIBLE] + ["".join(INVISIBLE) + " -x"]


@pytest.mark.parametrize("cell", FORMULAS)
def test_formula_like(cell: str) -> None:
    assert formula_like(cell)


@pytest.mark.parametrize("cell", ["", " ", "word", "'=1", "a=1", "1-2", " x-1", "\n", "é=", "日本"])
def test_not_formula_like(cell: str) -> None:
    assert not formula_like(cell)


def test_every_format_character_is_blank() -> None:
    """Whatever Unicode this Python knows: each format character (Cf) is blank."""
    import unicodedata

    from tether.datasets.csv_output import BLANKS

    cf = [c for c in map(chr, range(0x110000)) if unicodedata.category(c) == "Cf"]
    assert len(cf) > 150
    assert [f"U+{ord(c):04X}" for c in cf if c not in BLANKS] == []
    assert not formula_like("\u00ad\u200b" + "a=1") and formula_like("\u00ad\u200b" + "@a")
