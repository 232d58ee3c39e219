"""How the client writes to a terminal and elsewhere: on a terminal lines fit its width
and long values are shortened with …; in a pipe or a file every line and value is whole
(a script that greps the output must not meet a line broken at 80 columns)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

UNWRAPPED = 100_000  # "width" off a terminal: wider than any line the client writes


def console(stderr: bool = False) -> Console:
    """A Rich console for stdout (or stderr) that wraps only on a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, width=UNWRAPPED, soft_wrap=True)


def clip(text: str, limit: int | None) -> str:
    """``text`` cut to ``limit`` characters, the last one an …; whole when ``limit`` is
    None (off a terminal)."""
    if limit is None or len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def limit_on(con: Console, limit: int) -> int | None:
    """``limit`` when ``con`` writes to a terminal, else None (no cutting)."""
    return limit if con.is_terminal else None


def fit_widths(widths: Sequence[int], room: int, least: int = 12) -> list[int]:
    """Column ``widths`` that fit in ``room``. The last column (free text) gives way
    first, down to ``least``; when that is not enough, the first column (the key, such
    as an id) stays whole and the widest of the others are cut to one width, the
    largest at which they fit."""
    if sum(widths) <= room or len(widths) < 2:
        return list(widths)
    *others, last = widths
    spare = room - sum(others)
    if spare >= min(last, least):
        return [*others, spare]
    key, rest = widths[0], list(widths[1:])
    budget = room - key
    cap = max(budget // len(rest), 1)
    while sum(min(w, cap + 1) for w in rest) <= budget:
        cap += 1
    return [key, *(min(w, cap) for w in rest)]


def one_line_table(con: Console, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A table of ``rows`` for ``con``. On a terminal each row is one line: columns are
    cut to fit its width (``fit_widths``) and cut cells end with …; Rich alone would wrap
    them, or on a narrow terminal cut the first column away. Elsewhere nothing is cut."""
    table = Table(*headers)
    if con.is_terminal:
        natural = [max(map(cell_len, cells)) for cells in zip(headers, *rows, strict=True)]
        # a space either side of every cell, a rule before each column and after the last
        room = con.width - (3 * len(headers) + 1)
        for column, width in zip(table.columns, fit_widths(natural, room), strict=True):
            column.width = width
            column.no_wrap = True
            column.overflow = "ellipsis"
    for row in rows:
        table.add_row(*row)
    return table
