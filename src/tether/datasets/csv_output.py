"""CSV as exports write it, on every database: RFC 4180 records (a cell holding the
delimiter, a quote, CR or LF is quoted) ended by LF as COPY ends them, cells in the
text a reader gets back, and the formula guard. As PostgreSQL's COPY writes them, a
null is an empty field and an empty string is ``""`` (a record of one null is ``""``
too: an empty line would be skipped by readers).

The formula guard: a text cell is given a leading ' when a spreadsheet could read it as
a formula, that is when its first character that is not blank is one of FORMULA, or
when it starts with a tab or CR (which some spreadsheets also take as a formula start).
Blank: any Unicode whitespace, every format character (category Cf: soft hyphen,
zero-width and bidirectional controls, tags …), the combining grapheme joiner and the
Hangul fillers: characters a reader does not see, or sees as space.
PostgreSQL applies the same guard in SQL (``dialects.postgresql``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

FORMULA = ("=", "+", "-", "@")
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003"
    "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# Unicode's format characters (Cf, as of Unicode 15.1), as ranges: listed rather than
# found with unicodedata, so the set does not change with the Python that runs it
FORMAT_RANGES = (
    (0x00AD, 0x00AD), (0x0600, 0x0605), (0x061C, 0x061C), (0x06DD, 0x06DD),
    (0x070F, 0x070F), (0x0890, 0x0891), (0x08E2, 0x08E2), (0x180E, 0x180E),
    (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F),
    (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD),
    (0x13430, 0x1343F), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)  # fmt: skip
INVISIBLE = "\u034f\u115f\u1160\u3164\uffa0"  # grapheme joiner, Hangul fillers
BLANKS = WHITESPACE + "".join(chr(c) for a, b in FORMAT_RANGES for c in range(a, b + 1))
BLANKS += INVISIBLE


# An empty string cell until the record is written: the csv module writes "" and None
# alike, as an empty field. No cell holds NUL (imports refuse it in text).
EMPTY = "\x00"


class CsvLines:
    """What a ``csv.writer(lines, lineterminator="\\r\\n")`` writes, as records ended by
    LF (as COPY ends them). The csv module quotes a field holding the delimiter, the
    quote or a character of the line terminator: told CRLF, it quotes CR as well as LF
    (told LF, it would leave a CR bare, and a reader would start a new record there).
    It writes each record with one call, ended by the terminator."""

    def __init__(self) -> None:
        self._records: list[str] = []

    def write(self, record: str) -> int:
        self._records.append(record[:-2])
        return len(record)

    def text(self) -> str:
        if not self._records:
            return ""
        text = "\n".join(self._records) + "\n"
        return text.replace(EMPTY, '""') if EMPTY in text else text


def formula_like(text: str) -> bool:
    """Whether the formula guard gives this text cell a leading ' (see FORMULA)."""
    return text.startswith(("\t", "\r")) or text.lstrip(BLANKS).startswith(FORMULA)


def export_cell(value: Any, kind: str, raw: bool) -> Any:
    """A value read from a dataset table as the CSV cell an export writes."""
    if value is None:
        return ""
    if value == "":
        return EMPTY
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamptz" and isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # MySQL/MariaDB: DATETIME, stored in UTC
    if isinstance(value, datetime | date):
        return value.isoformat()
    if kind == "text" and not raw and formula_like(str(value)):
        return "'" + str(value)
    return value
