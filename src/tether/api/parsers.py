"""The API's JSON parser: bounded size and nesting, strict numbers.

``json.loads`` recurses once per nesting level, so a body of 10,000 ``[`` ends in a
RecursionError (a 500) before any serializer sees it. The depth is therefore measured
first, without recursion and at C speed, and a body nested deeper than MAX_DEPTH is a
400 ``too_deep``. Numbers JSON cannot hold (``1e400`` parses as infinity, ``NaN``) are
refused here too, and so are strings holding NUL or an unpaired surrogate (``"\\ud800"``):
no database stores them (PostgreSQL refuses both, the others' JSON checks surrogates).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import IO, Any

from django.conf import settings
from rest_framework import exceptions, parsers, status

MAX_DEPTH = 64
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
_STRING = re.compile(r'"[^"]*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class TooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "the request body is too large"


def size_text(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def body_too_large() -> TooLarge:
    limit = int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
    return TooLarge(f"the request body is larger than {size_text(limit)}, the limit for JSON")


def deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in JSON ``text`` nest more than ``limit`` levels.
    Brackets inside strings do not count. Linear time, no recursion: escaped
    backslashes and quotes are dropped (JSON allows backslashes only inside strings,
    and its escapes pair from the left, as ``str.replace`` does), then whole strings,
    then everything but brackets; the running sum of +1/-1 is the depth. Malformed
    text gives some number; json.loads refuses it afterwards anyway."""
    if text.count("[") + text.count("{") <= limit:
        return False
    bare = text.replace("\\\\", "").replace('\\"', "")
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", bare))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0) > limit


def unstorable_text(value: Any) -> str | None:
    """What makes a parsed JSON document unstorable: a string (or key) holding NUL or
    an unpaired surrogate; None when there is none. Iterative, linear."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a string holds NUL (\\u0000)"
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as exc:
                    return f"a string holds an unpaired surrogate (\\u{ord(item[exc.start]):04x})"
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise exceptions.ParseError(
                    f"the key {key[:100]!r} appears twice in one JSON object",
                    code="duplicate_key",
                )
            seen.add(key)
    return found


class JSONParser(parsers.JSONParser):
    refuse_duplicate_keys = False
    """Whether a key given twice in one object is a 400 ``duplicate_key`` (by default
    the last one counts, as in ``json.loads``)."""

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        if stream is None:
            return {}
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:  # a body sent without Content-Length
            raise body_too_large()
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        if deeper_than(text, MAX_DEPTH):
            raise exceptions.ParseError(
                f"JSON nested deeper than {MAX_DEPTH} levels", code="too_deep"
            )
        try:
            data = json.loads(
                text,
                parse_constant=_no_constants,
                parse_float=_finite,
                object_pairs_hook=_unique_keys if self.refuse_duplicate_keys else None,
            )
        except ValueError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        # NUL and surrogates can only come from \u escapes (raw ones are not valid input)
        problem = unstorable_text(data) if "\\u" in text else None
        if problem:
            raise exceptions.ParseError(f"{problem}, which cannot be stored", code="bad_text")
        return data


class UniqueKeysJSONParser(JSONParser):
    """For documents whose every key counts (a pipeline): a duplicate is a mistake to
    report, not a value to drop silently."""

    refuse_duplicate_keys = True
