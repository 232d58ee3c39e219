"""Column types of a dataset: inference from a sample of CSV text, and parsing of cells.

Types, from the narrowest: integer, float, boolean, date, timestamp (naive),
timestamptz (with a zone), text. A column's type is the narrowest that every non-null
sample cell parses as; an all-null sample gives text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

TYPES = ("integer", "float", "boolean", "date", "timestamp", "timestamptz", "text")
DEFAULT_NULLS = ("", "NA", "NULL")
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})
INT_RE = re.compile(r"^[+-]?\d{1,18}$")  # fits a 64-bit integer column
FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
                   r"(?P<zone>Z|[+-]\d{2}:?\d{2})?$")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,62}$")


class CellError(ValueError):
    """A cell that does not parse as its column's type."""


def parse_integer(text: str) -> int:
    if not INT_RE.match(text):
        raise CellError(f"{text[:40]!r} is not an integer")
    return int(text)


def parse_float(text: str) -> float:
    if not FLOAT_RE.match(text.strip()):
        raise CellError(f"{text[:40]!r} is not a number")
    return float(text)


def parse_boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise CellError(f"{text[:40]!r} is not a boolean (true/false, yes/no, 1/0)")


def parse_date(text: str) -> date:
    if not DATE_RE.match(text):
        raise CellError(f"{text[:40]!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise CellError(f"{text[:40]!r} is not a date: {exc}") from None


def _parse_ts(text: str, zoned: bool) -> datetime:
    m = TS_RE.match(text)
    if not m or bool(m.group("zone")) != zoned:
        kind = "a timestamp with a zone" if zoned else "a timestamp without a zone"
        raise CellError(f"{text[:40]!r} is not {kind} (ISO 8601)")
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise CellError(f"{text[:40]!r} is not a timestamp: {exc}") from None


def parse_timestamp(text: str) -> datetime:
    return _parse_ts(text, zoned=False)


def parse_timestamptz(text: str) -> datetime:
    return _parse_ts(text, zoned=True)


def parse_text(text: str) -> str:
    if "\x00" in text:
        raise CellError("text contains a NUL character")
    return text


PARSERS: dict[str, Callable[[str], Any]] = {
    "integer": parse_integer, "float": parse_float, "boolean": parse_boolean,
    "date": parse_date, "timestamp": parse_timestamp, "timestamptz": parse_timestamptz,
    "text": parse_text,
}


def infer(header: Sequence[str], rows: Iterable[Sequence[str]],
          nulls: Iterable[str] = DEFAULT_NULLS) -> list[dict[str, str]]:
    """Column names and inferred types from sample rows (as read, all text): for each
    column the narrowest type that parses every non-null sample cell."""
    null_set = set(nulls)
    samples: list[set[str]] = [set() for _ in header]
    for row in rows:
        for i, cell in enumerate(row[: len(header)]):
            if cell not in null_set:
                samples[i].add(cell)
    return [{"name": name, "type": _narrowest(values)}
            for name, values in zip(header, samples, strict=True)]


def _narrowest(values: set[str]) -> str:
    if not values:
        return "text"
    for kind in TYPES[:-1]:
        parse = PARSERS[kind]
        try:
            for value in values:
                parse(value)
        except CellError:
            continue
        return kind
    return "text"


def clean_names(header: Sequence[str]) -> list[str]:
    """Column names from a header row: trimmed, unique, and safe as SQL identifiers
    once quoted (letters, digits, '_' and spaces); anything else is refused."""
    names: list[str] = []
    for i, raw in enumerate(header, start=1):
        name = raw.strip() or f"column_{i}"
        if not NAME_RE.match(name):
            raise CellError(f"column {i} name {raw[:40]!r} is not allowed (letters, digits, "
                            "'_' and spaces, starting with a letter, at most 63 characters)")
        if name.lower() in (n.lower() for n in names):
            raise CellError(f"column name {name!r} appears twice")
        names.append(name)
    return names
