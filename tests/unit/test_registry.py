from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tether import registry
from tether.exceptions import InvalidParams, UnknownTaskType


@pytest.fixture
def sample() -> Iterator[registry.TaskType]:
    @registry.task(
        name="unit_sample",
        queue="q1",
        max_attempts=5,
        params={
            "type": "object",
            "properties": {
                "n": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 10,
                    "description": "n is capped at 10",
                },
                "mode": {"type": "string", "default": "fast"},
            },
            "required": ["n"],
            "additionalProperties": False,
        },
    )
    def sample(ctx: object, *, n: int, mode: str) -> int:
        """Sample docs."""
        return n

    yield registry.get_type("unit_sample")
    registry.unregister("unit_sample")


def test_registration(sample: registry.TaskType) -> None:
    assert sample.queue == "q1" and sample.max_attempts == 5
    assert sample.description == "Sample docs."
    assert "unit_sample" in [t.name for t in registry.all_types()]


def test_defaults_filled(sample: registry.TaskType) -> None:
    assert sample.validate({"n": 3}) == {"n": 3, "mode": "fast"}


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"n": -1}, "params.n"),
        ({"n": 11}, "capped at 10"),
        ({"n": "x"}, "params.n"),
        ({}, "'n' is a required property"),
        ({"n": 1, "zzz": 1}, "zzz"),
        ([1, 2], "JSON object"),
    ],
)
def test_invalid_params(sample: registry.TaskType, params: object, needle: str) -> None:
    with pytest.raises(InvalidParams) as err:
        sample.validate(params)
    assert needle in err.value.message


def test_unknown_type_names_known_ones() -> None:
    with pytest.raises(UnknownTaskType) as err:
        registry.get_type("nope")
    assert "countdown" in err.value.message


def test_bad_schema_rejected_at_registration() -> None:
    with pytest.raises(Exception):  # noqa: B017 - jsonschema's SchemaError
        registry.task(name="bad", params={"type": "no-such-type"})(lambda ctx: None)


def test_builtin_caps_are_explained() -> None:
    with pytest.raises(InvalidParams) as err:
        registry.get_type("fibonacci").validate({"n": 10**9})
    assert "capped at 20000" in err.value.message
    with pytest.raises(InvalidParams):
        registry.get_type("render").validate({"frames": 0})
    with pytest.raises(InvalidParams):
        registry.get_type("countdown").validate({"seconds": -5})


def test_recovery_options_default_and_are_checked() -> None:
    from tether.recovery import recovery_delay

    @registry.task(name="unit_recovering", max_recoveries=3, recovery_backoff=0.25)
    def recovering(ctx: object) -> None:
        """Recovered."""

    try:
        ttype = registry.get_type("unit_recovering")
        assert (ttype.max_recoveries, ttype.recovery_backoff) == (3, 0.25)
        assert [recovery_delay("unit_recovering", n) for n in (1, 2, 3)] == [0.25, 0.5, 1.0]
        assert recovery_delay("unit_recovering", 30) == 60.0  # capped
        assert recovery_delay("no_such_type", 2) == 2.0  # the default backoff
    finally:
        registry.unregister("unit_recovering")
    with pytest.raises(ValueError, match="max_recoveries"):
        registry.task(name="unit_bad", max_recoveries=-1)


def test_check_runs_after_the_schema_and_its_defaults() -> None:
    seen: list[dict[str, Any]] = []

    def ordered(params: dict[str, Any]) -> None:
        seen.append(dict(params))
        if params["low"] > params["high"]:
            raise InvalidParams("params.high: must not be below low", field="high")

    @registry.task(
        name="unit_checked",
        check=ordered,
        params={
            "type": "object",
            "properties": {"low": {"type": "integer"}, "high": {"type": "integer", "default": 9}},
            "required": ["low"],
            "additionalProperties": False,
        },
    )
    def checked(ctx: object, *, low: int, high: int) -> None:
        """Checked."""

    try:
        ttype = registry.get_type("unit_checked")
        assert ttype.validate({"low": 3}) == {"low": 3, "high": 9}
        assert seen == [{"low": 3, "high": 9}]  # with the default filled in
        with pytest.raises(InvalidParams) as err:
            ttype.validate({"low": 10})
        assert err.value.extra == {"field": "high"} and "below low" in err.value.message
        with pytest.raises(InvalidParams) as err:
            ttype.validate({"low": "x"})  # the schema first: the check never sees it
        assert err.value.extra == {"field": "low"} and len(seen) == 2
    finally:
        registry.unregister("unit_checked")


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("sentinel", {"date_start": "2023-02-31"}, "date_start"),
        ("sentinel", {"date_start": "2023-05-01", "date_end": "2023-04-31"}, "date_end"),
        ("sentinel", {"date_start": "2023-05-01", "date_end": "2023-04-30"}, "date_end"),
        ("sentinel", {"date_start": "2023-05-01", "date_end": "2024-05-01"}, "date_end"),
        ("export_csv", {"from_date": "2024-13-45"}, "from_date"),
        ("export_csv", {"to_date": "2024-02-30"}, "to_date"),
        ("export_csv", {"from_date": "2024-02-01", "to_date": "2024-01-31"}, "to_date"),
        ("import_csv", {"dataset": "Import"}, "dataset"),
        ("import_csv", {"dataset": "d", "delimiter": '"'}, "delimiter"),
        ("import_csv", {"dataset": "d", "delimiter": "\n"}, "delimiter"),
        (
            "import_csv",
            {
                "dataset": "d",
                "columns": [{"name": "a", "type": "text"}, {"name": "A", "type": "text"}],
            },
            "columns",
        ),
        ("import_csv", {"dataset": "d", "columns": [{"name": "a;b", "type": "text"}]}, "columns"),
    ],
)
def test_builtin_steps_check_their_params_on_submit(
    name: str, params: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidParams) as err:
        registry.get_type(name).validate(params)
    assert err.value.extra == {"field": field}, err.value.message


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("sentinel", {"date_start": "2024-02-29"}),
        ("sentinel", {"date_start": "2023-05-01", "date_end": "2024-04-30"}),  # 366 days
        ("export_csv", {"from_date": "2024-01-31", "to_date": "2024-01-31"}),
        ("export_csv", {"to_date": "2024-01-31"}),
        (
            "import_csv",
            {"dataset": "imports", "delimiter": ";", "columns": [{"name": "a b", "type": "text"}]},
        ),
    ],
)
def test_builtin_steps_take_good_params(name: str, params: dict[str, object]) -> None:
    registry.get_type(name).validate(params)
