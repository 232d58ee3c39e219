"""Strict JSON: the documents (results, checkpoints, progress) every supported database
stores as they are. Pure Python.

A value that fails here would make the database refuse the write (PostgreSQL, MariaDB
and SQLite all check JSON columns), and a refused row must never take other rows of
a grouped write down with it. So Tether checks each document before writing it and
names the first place that breaks the rules: ``$.sum is inf``, ``$.rows[3] is nan``.

The rules, each one a database's limit or a silent change Python's ``json`` would make:
finite numbers only (JSON has no NaN or infinity); dicts with string keys, lists and
tuples (stored as arrays), strings, integers, floats, booleans and None; no NUL
character or lone surrogate in a string (PostgreSQL and MariaDB refuse them); at most
MAX_DEPTH nested containers (MariaDB's limit); integers short enough for Python to
print and read back; no container inside itself.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

from tether.exceptions import ResultNotJSON

MAX_DEPTH = 31  # MariaDB's JSON_VALID refuses 32 levels of nesting
_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BIG_INT_BITS = 4000  # below this an int has well under 4,300 digits: no need to look


class _Bad(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
        self.path: list[str] = []


def problem(value: Any) -> str | None:
    """None when ``value`` is strict JSON, else what is wrong and where (``$.sum is inf``)."""
    try:
        _walk(value, 0, set())
    except _Bad as bad:
        return f"${''.join(reversed(bad.path))} {bad.why}"
    return None


def check(value: Any, what: str = "result") -> None:
    """Raise ResultNotJSON (naming ``what`` and the place) unless ``value`` is strict JSON."""
    found = problem(value)
    if found is not None:
        raise ResultNotJSON(f"the {what} is not strict JSON: {found}")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as a JSON string (None when it can)."""
    if "\x00" in text:
        return "contains a NUL character"
    if not text.isascii():
        bad = _SURROGATE.search(text)
        if bad is not None:
            return f"contains a lone surrogate (\\u{ord(bad.group()):04x})"
    return None


def safe_text(text: str, limit: int = 4000) -> str:
    """``text`` (at most ``limit`` characters) with what a database refuses in a text
    column (NUL, lone surrogates) escaped: for messages that quote task output (errors,
    event reasons)."""
    text = text[:limit]
    if text_problem(text) is None:
        return text
    escaped = text.replace("\x00", "\\x00")
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


def _walk(value: Any, depth: int, open_ids: set[int]) -> None:
    if value is None or value is True or value is False:
        return
    if isinstance(value, str):
        why = text_problem(value)
        if why is not None:
            raise _Bad(why)
    elif isinstance(value, int):
        if value.bit_length() > _BIG_INT_BITS:
            _check_big_int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _Bad(f"is {float.__repr__(value)}")  # inf, -inf or nan
    elif isinstance(value, (dict, list, tuple)):
        _walk_container(value, depth + 1, open_ids)
    else:
        raise _Bad(f"is {_a(type(value).__name__)}, which JSON cannot hold")


def _walk_container(
    value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int, open_ids: set[int]
) -> None:
    if id(value) in open_ids:
        raise _Bad("contains itself (a circular reference)")
    if depth > MAX_DEPTH:
        raise _Bad(f"nests deeper than {MAX_DEPTH} levels")
    open_ids.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Bad(f"has a key that is not a string: {key!r}")
            why = text_problem(key)
            if why is not None:
                raise _Bad(f"has a key that {why}")
            try:
                _walk(item, depth, open_ids)
            except _Bad as bad:
                bad.path.append(_member(key))
                raise
    else:
        for index, item in enumerate(value):
            try:
                _walk(item, depth, open_ids)
            except _Bad as bad:
                bad.path.append(f"[{index}]")
                raise
    open_ids.discard(id(value))


def _check_big_int(value: int) -> None:
    try:
        str(value)
    except ValueError:
        limit = sys.get_int_max_str_digits()
        raise _Bad(f"is an integer of more than {limit} digits") from None


def _member(key: str) -> str:
    if _IDENTIFIER.match(key):
        return f".{key}"
    return f"[{_quote(key)}]"


def _quote(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def _a(name: str) -> str:
    if name in ("bytes", "bytearray"):
        return name
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"
