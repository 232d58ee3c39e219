"""Column types of a dataset: inference from a sample of CSV text, and parsing of cells.

Types, from the narrowest: integer, float, boolean, date, timestamp (naive),
timestamptz (with a zone), text. A column's type is the narrowest that every non-null
sample cell parses as; an all-null sample gives text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from typing import Any

from tether.datasets.errors import CellError

TYPES = ("integer", "float", "boolean", "date", "timestamp", "timestamptz", "text")
DEFAULT_NULLS = ("", "NA", "NULL")
TRUE = frozenset({"true", "t", "yes", "y", "1"})
FALSE = frozenset({"false", "f", "no", "n", "0"})
INT_RE = re.compile(r"^[+-]?\d{1,18}$")  # fits a 64-bit integer column
FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|nan)$", re.I)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TS_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})?$"
)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,62}$")


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
    """In UTC (as every database stores it; date ranges compare UTC days)."""
    return _parse_ts(text, zoned=True).astimezone(UTC)


def parse_text(text: str) -> str:
    if "\x00" in text:
        raise CellError("text contains a NUL character")
    return text


PARSERS: dict[str, Callable[[str], Any]] = {
    "integer": parse_integer,
    "float": parse_float,
    "boolean": parse_boolean,
    "date": parse_date,
    "timestamp": parse_timestamp,
    "timestamptz": parse_timestamptz,
    "text": parse_text,
}


def infer(
    header: Sequence[str], rows: Iterable[Sequence[str]], nulls: Iterable[str] = DEFAULT_NULLS
) -> list[dict[str, str]]:
    """Column names and inferred types from sample rows (as read, all text): for each
    column the narrowest type that parses every non-null sample cell."""
    null_set = set(nulls)
    samples: list[set[str]] = [set() for _ in header]
    for row in rows:
        for i, cell in enumerate(row[: len(header)]):
            if cell not in null_set:
                samples[i].add(cell)
    return [
        {"name": name, "type": _narrowest(values)}
        for name, values in zip(header, samples, strict=True)
    ]


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
    seen: set[str] = set()  # lower-cased: one look-up per name (linear in the header)
    for i, raw in enumerate(header, start=1):
        name = raw.strip() or f"column_{i}"
        if not NAME_RE.match(name):
            raise CellError(
                f"column {i} name {raw[:40]!r} is not allowed (letters, digits, "
                "'_' and spaces, starting with a letter, at most 63 characters)"
            )
        if name.lower() in seen:
            raise CellError(f"column name {name!r} appears twice")
        seen.add(name.lower())
        names.append(name)
    return names


# -- whole blocks and columns at once (the import's fast paths) -------------------------
# Both give exactly what the per-cell parsers above give, or decline (None / CellError),
# and the importer then takes the per-cell path for that block.

DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
# Shapes (a cell's bytes with every digit as 0) whose values PostgreSQL's own input
# functions accept exactly when the parsers above do, with the same value. Left out on
# purpose: surrounding blanks, inf/nan, 19-digit integers, other date styles, "on"/"off"
# (PostgreSQL takes them, the parsers do not). Hour 24 and second 60, which PostgreSQL
# also takes, have shapes like any other time: the importer looks for them apart.
_TIME = rb"0000-00-00[T ]00:00(?::00(?:\.0{1,6})?)?"
PG_SHAPES = {
    "integer": re.compile(rb"[+-]?0{1,18}"),
    "float": re.compile(rb"[+-]?(?:0+\.?0*|\.0+)(?:[eE][+-]?0+)?"),
    "date": re.compile(rb"0000-00-00"),
    "timestamp": re.compile(_TIME),
    "timestamptz": re.compile(_TIME + rb"(?:Z|[+-]00:?00)"),
}
BOOL_SHAPES = frozenset(v.encode().translate(DIGITS_TO_ZERO) for v in TRUE | FALSE)


def pg_shape_ok(kind: str, shape: bytes) -> bool:
    """Whether PostgreSQL's parsing of every cell of this shape agrees with PARSERS."""
    if kind == "boolean":
        return shape.lower() in BOOL_SHAPES
    pattern = PG_SHAPES.get(kind)
    return pattern is not None and pattern.fullmatch(shape) is not None


def _iso(value: Any) -> Any:
    return value.isoformat()


NUMBER_CHARS = b"0123456789.eE+-"


def column_values(
    kind: str, cells: Sequence[str], nulls: frozenset[str], iso: bool
) -> Sequence[Any]:
    """The cells of one column parsed as ``kind`` (None for null cells), as the parser
    would give them cell by cell; dates and timestamps as ISO text when ``iso``.
    Raises CellError for a bad cell (without saying which: the caller finds it).
    Integer cells may stay text (ASCII digits only, at most 18): the database converts
    them."""
    parse = PARSERS[kind]
    if kind == "text":
        present = [n for n in nulls if n in cells]
        if not present:
            return cells
        if present == [""]:
            return [c or None for c in cells]
        return [None if c in nulls else c for c in cells]
    # null cells: "" (cheap to map) and any other null token that could pass as a value
    empty_null = "" in nulls and "" in cells
    if kind in ("integer", "float"):
        tokens = [
            n for n in nulls if n and not n.encode(errors="replace").translate(None, NUMBER_CHARS)
        ]
        quick = not any(n in cells for n in tokens)
        if quick and kind == "integer":
            joined = "".join(cells)
            if joined.isascii() and joined.isdigit() and max(map(len, cells), default=0) <= 18:
                if empty_null:
                    return [c or None for c in cells]
                if "" not in cells:
                    return cells
        elif quick:
            try:
                chars = "\x00".join(cells).encode("ascii")
            except UnicodeEncodeError:
                chars = b"x"
            if not chars.translate(None, NUMBER_CHARS + b"\x00"):
                try:
                    if empty_null:
                        return [float(c) if c else None for c in cells]
                    return list(map(float, cells))
                except ValueError:
                    raise CellError("not a number") from None
    elif kind == "boolean":
        distinct = set(cells)
        if len(distinct) <= 64:
            known = {c: None if c in nulls else parse(c) for c in distinct}
            return list(map(known.__getitem__, cells))
    elif not any(n in cells for n in nulls if n):  # date, timestamp, timestamptz
        values = _dates_times(cells, kind, empty_null, iso)
        if values is not None:
            return values
    if iso and kind in ("date", "timestamp", "timestamptz"):
        return [None if c in nulls else _iso(parse(c)) for c in cells]
    return [None if c in nulls else parse(c) for c in cells]


_SHAPES: set[tuple[bytes, str]] = set()  # ISO shapes seen (few: digits are all 0)
_ISO_SAME = re.compile(rb"0000-00-00(?:T00:00:00(?:\.000000)?)?")


def _dates_times(
    cells: Sequence[str], kind: str, empty_null: bool, iso: bool
) -> Sequence[Any] | None:
    """Dates or timestamps parsed column-wise when every cell is ISO-shaped (or empty,
    and empty is null); None when some cell needs the per-cell path."""
    try:
        raw = "\n".join(cells).encode("ascii")
    except UnicodeEncodeError:
        return None
    shapes = set(raw.translate(DIGITS_TO_ZERO).split(b"\n"))
    has_empty = b"" in shapes
    if has_empty and not empty_null:
        return None
    shapes.discard(b"")
    for shape in shapes:
        if (shape, kind) not in _SHAPES:
            if kind == "date":
                if shape != b"0000-00-00":
                    return None
            else:
                m = TS_RE.match(shape.decode())
                if not m or bool(m.group("zone")) != (kind == "timestamptz"):
                    return None
            if len(_SHAPES) < 1000:
                _SHAPES.add((shape, kind))
    parse = date.fromisoformat if kind == "date" else datetime.fromisoformat
    try:
        values: list[Any] = (
            [parse(c) if c else None for c in cells] if has_empty else list(map(parse, cells))
        )
    except ValueError:
        raise CellError(f"not a {kind}") from None
    zoned = kind == "timestamptz"
    if (
        iso
        and not has_empty
        and zoned
        and all(
            shape.endswith(b"Z") and shape[10:11] == b"T" and len(shape) == 20 for shape in shapes
        )
    ):  # UTC already: only Z -> +00:00
        return ("\n".join(cells) + "\n").replace("Z\n", "+00:00\n")[:-1].split("\n")
    if zoned:  # in UTC, as parse_timestamptz gives them
        values = [v.astimezone(UTC) if isinstance(v, datetime) else None for v in values]
    if not iso:
        return values
    if not zoned and all(_ISO_SAME.fullmatch(shape) for shape in shapes):
        return [c or None for c in cells] if has_empty else cells  # isoformat() is the text
    return [v.isoformat() if v is not None else None for v in values]
