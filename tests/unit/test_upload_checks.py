"""What an upload must be before an import is even created (pure logic)."""

from __future__ import annotations

import bz2
import gzip

import pytest

from tether.datasets.checks import SNIFF_BYTES, match_columns, text_problem
from tether.datasets.errors import ColumnsMismatch

COLUMNS = [{"name": n, "type": t} for n, t in (("a", "integer"), ("b", "text"), ("c", "float"))]


@pytest.mark.parametrize(
    "head",
    [
        b"a,b\n1,2\n",
        "\ufeffname\ncafé ☕\n".encode(),  # BOM, multi-byte characters
        b"BZh,x\n1,2\n",  # bzip2's first three bytes, but a header
        b"",
    ],
)
def test_text_is_text(head: bytes) -> None:
    assert text_problem(head, whole=True) is None


def test_a_character_cut_by_the_block_is_fine_unless_the_file_ends_there() -> None:
    head = (b"a\n" + b"x" * SNIFF_BYTES)[: SNIFF_BYTES - 1] + "é".encode()[:1]
    assert text_problem(head, whole=False) is None
    assert "not UTF-8" in str(text_problem(head, whole=True))


@pytest.mark.parametrize(
    ("head", "words"),
    [
        (gzip.compress(b"a,b\n"), "gzip"),
        (bz2.compress(b"a,b\n"), "bzip2"),
        (b"PK\x03\x04rest", "zip archive"),
        (b"a,b\n\x00", "NUL byte at offset 4"),
        ("é".encode("latin-1"), "byte 0xe9 at offset 0"),
        ("a".encode("utf-16"), "UTF-16"),
    ],
    ids=["gzip", "bzip2", "zip", "nul", "latin-1", "utf-16"],
)
def test_what_is_not_text(head: bytes, words: str) -> None:
    assert words in str(text_problem(head, whole=True))


def test_columns_are_matched_by_name_in_any_order() -> None:
    got = match_columns(["c", "a", "b"], "d", COLUMNS)
    assert got == [COLUMNS[2], COLUMNS[0], COLUMNS[1]]
    assert match_columns(["x", "y", "z"], "d", COLUMNS, by_position=True) == COLUMNS


def test_a_mismatch_names_what_is_missing_and_extra() -> None:
    with pytest.raises(ColumnsMismatch) as caught:
        match_columns(["a", "x"], "d", COLUMNS)
    assert caught.value.extra == {
        "missing": ["b", "c"],
        "extra": ["x"],
        "expected": ["a", "b", "c"],
    }
    assert "missing b, c; not in the dataset: x" in caught.value.message
