"""Checks of a CSV upload made when it arrives, before any task exists, and again by
the import task: is the file UTF-8 text at all, what are its columns, and do they fit
the dataset an append goes to (matched by name, in any order).

No Django here: the CLI runs ``text_problem`` on a file before it uploads it.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tether.datasets.errors import CellError, ColumnsMismatch, DataError, NotText
from tether.datasets.files import Source
from tether.datasets.types import clean_names

SNIFF_BYTES = 64 * 1024
# Files that are not CSV, by their first bytes: naming the kind helps more than "byte
# 0x8b cannot be decoded". (Most binary formats also hold NUL bytes early on.)
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "it is gzip-compressed (decompress it first)"),
    (b"PK\x03\x04", "it is a zip archive or an .xlsx workbook (save the sheet as CSV)"),
    (b"\xfd7zXZ\x00", "it is xz-compressed (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "it is zstd-compressed (decompress it first)"),
    (b"7z\xbc\xaf\x27\x1c", "it is a 7-Zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "it is an .xls workbook (save the sheet as CSV)"),
    (b"%PDF-", "it is a PDF document"),
    (b"\x89PNG\r\n\x1a\n", "it is a PNG image"),
    (b"\xff\xd8\xff", "it is a JPEG image"),
    (b"SQLite format 3\x00", "it is an SQLite database"),
    (b"\xff\xfe", "it is UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "it is UTF-16 text (save it as UTF-8)"),
)
BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")


def text_problem(head: bytes, whole: bool = False) -> str | None:
    """Why the file starting with ``head`` (its first SNIFF_BYTES, or all of it when
    ``whole``) is not UTF-8 text, or None when it may be."""
    for magic, why in MAGIC:
        if head.startswith(magic):
            return why
    if BZIP2.match(head):
        return "it is bzip2-compressed (decompress it first)"
    nul = head.find(b"\x00")
    if nul >= 0:
        return f"it holds binary data (a NUL byte at offset {nul})"
    try:  # a character cut at the end of the block is fine, unless that is the end
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=whole)
    except UnicodeDecodeError as exc:
        return (
            f"byte 0x{head[exc.start]:02x} at offset {exc.start} is not UTF-8 "
            "(save the file as UTF-8)"
        )
    return None


def check_text(path: Path) -> None:
    """Raise NotText unless the file's first block is UTF-8 text."""
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES + 1)
    problem = text_problem(head[:SNIFF_BYTES], whole=len(head) <= SNIFF_BYTES)
    if problem is not None:
        raise NotText(f"the file is not UTF-8 text: {problem}")


def first_record(records: Iterable[tuple[list[str], int]]) -> tuple[list[str], int]:
    """The first record that is not a blank line, and the line it ends on."""
    for record, line in records:
        if record:
            return record, line
    raise DataError("the file is empty (not even a header)")


def file_names(
    record: Sequence[str],
    line: int,
    *,
    header: bool,
    declared: Sequence[dict[str, str]] | None,
) -> list[str]:
    """The names of the file's columns, given its first record: the declared ones (one
    per column of the file), the header's, or column_1, column_2, … without a header."""
    if declared:
        if len(declared) != len(record):
            raise DataError(f"{len(declared)} columns declared but the file has {len(record)}")
        try:
            return clean_names([c["name"] for c in declared])
        except CellError as exc:
            raise DataError(f"declared columns: {exc}") from None
    if not header:
        return [f"column_{i}" for i in range(1, len(record) + 1)]
    try:
        return clean_names(record)
    except CellError as exc:
        raise DataError(f"line {line} (header): {exc}") from None


def match_columns(
    names: Sequence[str],
    dataset: str,
    columns: Sequence[dict[str, str]],
    *,
    by_position: bool = False,
    declared: Sequence[dict[str, str]] | None = None,
) -> list[dict[str, str]]:
    """The dataset's columns in the order of the file's (``names``) for an append:
    the same set of names, in any order. ``by_position`` (no header and no declared
    columns: there are no names) takes them in order, if there are as many. Declared
    types must be the dataset's. Raises ColumnsMismatch naming what differs."""
    have = [c["name"] for c in columns]
    if by_position:
        if len(names) != len(have):
            raise ColumnsMismatch(
                f"the file has {len(names)} columns, dataset {dataset!r} has "
                f"{len(have)} ({', '.join(have)})",
                expected=have,
            )
        return [dict(c) for c in columns]
    by_name = {c["name"]: c for c in columns}
    given = set(names)
    missing = [n for n in have if n not in given]
    extra = [n for n in names if n not in by_name]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"not in the dataset: {', '.join(extra)}"] if extra else []
        )
        raise ColumnsMismatch(
            f"the file's columns do not match dataset {dataset!r} ({'; '.join(parts)}); "
            f"its columns are {', '.join(have)} (in any order)",
            missing=missing,
            extra=extra,
            expected=have,
        )
    for name, col in zip(names, declared or [], strict=False):
        want = by_name[name]["type"]
        if col["type"] != want:
            raise ColumnsMismatch(
                f"column {name!r} is declared {col['type']} but is {want} in dataset {dataset!r}",
                expected=have,
            )
    return [dict(by_name[n]) for n in names]


def check_upload(
    path: Path,
    *,
    dataset: str,
    delimiter: str,
    header: bool,
    declared: Sequence[dict[str, str]] | None,
    append_to: Sequence[dict[str, str]] | None,
) -> None:
    """Everything about an upload that can be known before its import runs: it is
    text, its header is valid, and (``append_to``: the dataset's columns) its columns
    match the dataset's. Raises NotText, DataError or ColumnsMismatch."""
    check_text(path)
    with Source(path, delimiter) as src:
        record, line = first_record(src.records())
    names = file_names(record, line, header=header, declared=declared)
    if append_to is not None:
        match_columns(
            names,
            dataset,
            append_to,
            by_position=not header and not declared,
            declared=declared,
        )
