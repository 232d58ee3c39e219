"""The JSON parser's nesting measure: brackets inside strings do not count, escapes
are honoured, and no input makes it recurse."""

from __future__ import annotations

import json

import pytest

from tether.api.parsers import MAX_DEPTH, deeper_than


def doc(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [1, 2, MAX_DEPTH - 1])
def test_up_to_the_limit(depth: int) -> None:
    assert not deeper_than(doc(depth), MAX_DEPTH)
    assert not deeper_than(json.dumps({"a": json.loads(doc(depth))}), MAX_DEPTH)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000, 1_000_000])
def test_beyond_the_limit(depth: int) -> None:
    assert deeper_than(doc(depth), MAX_DEPTH)
    assert deeper_than('{"a": ' * depth + "1" + "}" * depth, MAX_DEPTH)
    assert deeper_than("[" * depth, MAX_DEPTH)  # unterminated too


@pytest.mark.parametrize(
    "text",
    [
        "[[[[[[[[[[[[",  # brackets in a string
        'x\\"[[[[[[[[[[[[',  # after an escaped quote: still inside the string
        "\\\\",  # an escaped backslash ends right before the closing quote
        '\\\\\\"[[[[[[[[',  # escaped backslash, escaped quote, still inside
    ],
)
def test_strings_do_not_count(text: str) -> None:
    value = json.loads(f'"{text}"')  # valid JSON string contents
    assert isinstance(value, str)
    body = json.dumps([value] * 200)
    assert not deeper_than(body, 2)
    assert deeper_than(f'[[["{text}"]]]', 2)


def test_many_escaped_quotes_stay_linear() -> None:
    # a regex matching strings from every quote would take quadratic time here
    body = '["' + '\\"' * 500_000 + '"' + "]" * 100
    assert not deeper_than(body, MAX_DEPTH)
