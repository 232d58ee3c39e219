"""Type inference and cell parsing for CSV datasets (pure logic)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from tether.datasets.errors import CellError
from tether.datasets.types import PARSERS, clean_names, column_values, infer


def test_infers_the_narrowest_type_per_column() -> None:
    header = ["id", "price", "ok", "day", "at", "at_utc", "name", "empty"]
    rows = [
        ["1", "2.5", "true", "2024-01-31", "2024-01-31 10:00:00", "2024-01-31T10:00:00Z", "a", ""],
        [
            "-7",
            "3",
            "no",
            "2023-12-01",
            "2024-02-01T11:30",
            "2024-02-01 11:30:00+02:00",
            "b, with comma",
            "NA",
        ],
        ["", "NA", "NULL", "", "", "", "", ""],
    ]
    assert [c["type"] for c in infer(header, rows)] == [
        "integer",
        "float",
        "boolean",
        "date",
        "timestamp",
        "timestamptz",
        "text",
        "text",
    ]


def test_a_later_value_widens_the_type_for_all_earlier_ones() -> None:
    # "2" is an integer but not a boolean: "yes" must not make the column boolean
    assert infer(["x"], [["2"], ["yes"]])[0]["type"] == "text"
    assert infer(["x"], [["1"], ["0"], ["yes"]])[0]["type"] == "boolean"
    assert infer(["x"], [["1"], ["1.5"]])[0]["type"] == "float"
    assert infer(["x"], [["2024-01-01"], ["2024-01-01 10:00"]])[0]["type"] == "text"


def test_custom_null_values() -> None:
    assert infer(["x"], [["-"], ["5"]], nulls=["-"])[0]["type"] == "integer"
    assert infer(["x"], [["-"], ["5"]])[0]["type"] == "text"


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("integer", "+42", 42),
        ("float", "1e3", 1000.0),
        ("boolean", "Y", True),
        ("date", "2024-02-29", date(2024, 2, 29)),
        ("timestamp", "2024-02-29 23:59:59.5", datetime(2024, 2, 29, 23, 59, 59, 500000)),
        (
            "timestamptz",
            "2024-02-29T23:59:59+01:00",
            datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("text", 'say "hi"\nthere', 'say "hi"\nthere'),
    ],
)
def test_parsers_accept(kind: str, text: str, value: object) -> None:
    assert PARSERS[kind](text) == value


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("integer", "1.0"),
        ("integer", "99999999999999999999"),
        ("float", "1,5"),
        ("boolean", "maybe"),
        ("date", "2023-02-29"),
        ("date", "31/01/2024"),
        ("timestamp", "2024-01-01T10:00Z"),
        ("timestamptz", "2024-01-01T10:00"),
        ("text", "nul\x00byte"),
    ],
)
def test_parsers_refuse_with_a_reason(kind: str, text: str) -> None:
    with pytest.raises(CellError) as err:
        PARSERS[kind](text)
    assert str(err.value)


def test_column_names_are_checked() -> None:
    assert clean_names([" id ", "", "unit price"]) == ["id", "column_2", "unit price"]
    for bad in (["a;drop table x"], ['a"b'], ["../etc"], ["1abc"]):
        with pytest.raises(CellError):
            clean_names(bad)
    with pytest.raises(CellError, match="twice"):
        clean_names(["A", "a"])


class _CountingName(str):
    """A header cell that counts how often a name made from it is lower-cased."""

    calls = 0

    def strip(self, chars: str | None = None) -> str:
        return _CountingName(str.strip(self, chars))

    def lower(self) -> str:
        _CountingName.calls += 1
        return str.lower(self)


def test_duplicate_names_are_found_in_linear_time() -> None:
    """Each name is compared once (a set), not with every earlier one: a header of
    20,000 columns took seconds of CPU when each name was checked against all before."""
    n = 5_000
    _CountingName.calls = 0
    assert len(clean_names([_CountingName(f"c{i}") for i in range(n)])) == n
    assert _CountingName.calls <= 2 * n
    with pytest.raises(CellError, match="'C7' appears twice"):
        clean_names([_CountingName(f"c{i}") for i in range(n)] + [_CountingName("C7")])


def test_generated_data_parses_back_with_the_expected_types() -> None:
    import csv
    import io

    from tether.datasets import generate

    buf = io.StringIO()
    assert generate.write(buf, 2_000, seed=7) == 2_000
    reader = csv.reader(io.StringIO(buf.getvalue()))
    header, *data = list(reader)
    assert header == generate.HEADER and len(data) == 2_000
    assert [int(r[0]) for r in data] == list(range(1, 2_001))
    assert any("\n" in r[8] for r in data) and any('"' in r[8] for r in data)
    assert any("," in r[1] for r in data)
    types = [c["type"] for c in infer(header, data)]
    assert types == [
        "integer",
        "text",
        "text",
        "float",
        "integer",
        "boolean",
        "timestamptz",
        "date",
        "text",
    ]
    again = io.StringIO()
    generate.write(again, 2_000, seed=7)
    assert again.getvalue() == buf.getvalue()  # same seed, same file


def test_zoned_timestamps_are_kept_in_utc() -> None:
    """Every database stores a zoned timestamp as UTC, so date ranges compare UTC days
    on all of them: 23:30 at -02:00 is on the next day."""
    value = PARSERS["timestamptz"]("2024-02-29T23:30:00-02:00")
    assert value.utcoffset() == timedelta(0)
    assert value == datetime(2024, 3, 1, 1, 30, tzinfo=UTC)
    cells = ["2024-02-29T23:30:00-02:00", "2024-03-01T00:15:00+05:30", ""]
    nulls = frozenset({""})
    assert column_values("timestamptz", cells, nulls, iso=True) == [
        "2024-03-01T01:30:00+00:00",
        "2024-02-29T18:45:00+00:00",
        None,
    ]
    parsed = column_values("timestamptz", cells[:2], nulls, iso=False)
    assert [v.utcoffset() for v in parsed] == [timedelta(0), timedelta(0)]
    assert column_values("timestamptz", ["2024-01-01T10:00:00Z"], nulls, iso=True) == [
        "2024-01-01T10:00:00+00:00"
    ]
