"""CSV as exports write it, on every database: RFC 4180 records (a cell holding the
delimiter, a quote, CR or LF is quoted) ended by LF as COPY ends them, cells in the
text a reader gets back, and the formula guard.

The formula guard: a text cell is given a leading ' when a spreadsheet could read it as
a formula, that is when its first character that is not blank is one of FORMULA, or
when it starts with a tab or CR (which some spreadsheets also take as a formula start).
Blank: any Unicode whitespace, and the zero-width characters a reader does not see.
PostgreSQL applies the same guard in SQL (``dialects.postgresql``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

FORMULA = ("=", "+", "-", "@")
BLANKS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u180e\u2000\u2001\u2002\u2003"
    "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u200b\u200c\u200d\u2028\u2029\u202f"
    "\u205f\u2060\u3000\ufeff"
)


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
        return "\n".join(self._records) + "\n" if self._records else ""


def formula_like(text: str) -> bool:
    """Whether the formula guard gives this text cell a leading ' (see FORMULA)."""
    return text.startswith(("\t", "\r")) or text.lstrip(BLANKS).startswith(FORMULA)


def export_cell(value: Any, kind: str, raw: bool) -> Any:
    """A value read from a dataset table as the CSV cell an export writes."""
    if value is None:
        return ""
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamptz" and isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # MySQL/MariaDB: DATETIME, stored in UTC
    if isinstance(value, datetime | date):
        return value.isoformat()
    if kind == "text" and not raw and formula_like(str(value)):
        return "'" + str(value)
    return value
