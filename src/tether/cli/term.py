"""How the client writes to a terminal and elsewhere: on a terminal lines fit its width
and long values are shortened with …; in a pipe or a file every line and value is whole
(a script that greps the output must not meet a line broken at 80 columns)."""

from __future__ import annotations

import sys

from rich.console import Console

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
