"""The strict-JSON check: what it accepts, what it refuses, and where it says the problem is."""

from __future__ import annotations

import datetime
import decimal
import json
from collections import OrderedDict
from typing import Any

import pytest

from tests.unit.fakes import MemoryStore
from tether import strictjson
from tether.context import TaskContext
from tether.exceptions import PauseSignal, ResultNotJSON
from tether.progress import snapshot

INF = float("inf")
NAN = float("nan")


def nested(levels: int) -> list[Any]:
    root: list[Any] = []
    inner = root
    for _ in range(levels - 1):
        inner.append([])
        inner = inner[0]
    return root


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -2.5,
        1.7976931348623157e308,
        "",
        "text with é, 漢字 and 😀",
        {"a": [1, 2.0, "x", None, False, {"b": []}]},
        (1, 2, (3,)),
        OrderedDict(a=1),
        10**4000,
        nested(strictjson.MAX_DEPTH),
        [[1]] * 3,  # the same list twice is not a cycle
    ],
)
def test_strict_json_passes(value: Any) -> None:
    assert strictjson.problem(value) is None
    json.dumps(value, allow_nan=False)  # and Python writes it without a fallback


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"sum": INF}, "$.sum is inf"),
        ({"rows": [0, 1, 2, NAN]}, "$.rows[3] is nan"),
        (-INF, "$ is -inf"),
        ({"x": {1, 2}}, "$.x is a set, which JSON cannot hold"),
        ({"x": b"\x00"}, "$.x is bytes, which JSON cannot hold"),
        ({"at": datetime.date(2026, 1, 1)}, "$.at is a date, which JSON cannot hold"),
        ([decimal.Decimal("1.5")], "$[0] is a Decimal, which JSON cannot hold"),
        (
            {"a b": {"c-d": [{"e": object()}]}},
            '$["a b"]["c-d"][0].e is an object, which JSON cannot hold',
        ),
        ({1: "one"}, "$ has a key that is not a string: 1"),
        ({"a": {(1, 2): 3}}, "$.a has a key that is not a string: (1, 2)"),
        ({"k\x00": 1}, "$ has a key that contains a NUL character"),
        ({"s": "a\x00b"}, "$.s contains a NUL character"),
        (["ok", "\ud800"], "$[1] contains a lone surrogate (\\ud800)"),
        ({"n": 10**5000}, "$.n is an integer of more than 4300 digits"),
        ({"deep": nested(strictjson.MAX_DEPTH)}, f"$.deep{'[0]' * 30} nests deeper than 31 levels"),
    ],
)
def test_what_json_cannot_hold_is_named_with_its_place(value: Any, message: str) -> None:
    assert strictjson.problem(value) == message
    with pytest.raises(ResultNotJSON) as raised:
        strictjson.check(value, "result")
    assert raised.value.code == "result_not_json"
    assert str(raised.value) == f"the result is not strict JSON: {message}"


def test_a_container_inside_itself_is_refused() -> None:
    loop: dict[str, Any] = {"a": [1]}
    loop["a"].append(loop)
    assert strictjson.problem(loop) == "$.a[1] contains itself (a circular reference)"


def test_safe_text_escapes_what_a_database_refuses() -> None:
    assert strictjson.safe_text("plain é") == "plain é"
    assert strictjson.safe_text("a\x00b \ud800 é") == "a\\x00b \\ud800 é"
    assert strictjson.problem(strictjson.safe_text("a\x00\udfff")) is None


# -- task context: checkpoints and progress are checked before they are written ------------
def make(store: MemoryStore, **kw: Any) -> TaskContext:
    return TaskContext(task_id=7, token="tok", store=store, **kw)


def test_a_checkpoint_json_cannot_hold_raises_and_is_not_written() -> None:
    store = MemoryStore()
    ctx = make(store)
    with pytest.raises(
        ResultNotJSON, match=r"the checkpoint is not strict JSON: \$\.rows\[3\] is nan"
    ):
        ctx.checkpoint({"rows": [1, 2, 3, NAN]})
    assert store.checkpoints == []


def test_a_checkpoint_changed_inside_atomic_is_checked_before_its_commit() -> None:
    store = MemoryStore()
    ctx = make(store)
    state: dict[str, Any] = {"n": 1}
    with pytest.raises(ResultNotJSON, match=r"\$\.n is inf"), ctx.atomic(state):
        store.pending.append("row")
        state["n"] = INF
    assert store.committed == [] and store.checkpoints == []


def test_a_lazy_checkpoint_json_cannot_hold_fails_at_a_pause_in_task_code() -> None:
    ctx = make(MemoryStore(), flush_interval=3600)
    ctx.progress(1)  # the first write
    ctx.checkpoint({"x": {1}}, sync=False)
    ctx.request_stop("pause")
    with pytest.raises(ResultNotJSON, match=r"\$\.x is a set"):
        ctx.progress(2)
    assert "checkpoint" not in ctx.pending_writes()  # never handed to the runner


def test_a_good_lazy_checkpoint_still_pauses() -> None:
    ctx = make(MemoryStore(), flush_interval=3600)
    ctx.progress(1)
    ctx.checkpoint({"x": 1}, sync=False)
    ctx.request_stop("pause")
    with pytest.raises(PauseSignal):
        ctx.progress(2)
    assert ctx.pending_writes()["checkpoint"] == {"x": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"done": NAN}, r"the progress is not strict JSON: \$\.done is nan"),
        ({"done": 1, "total": INF}, r"\$\.total is inf"),
        ({"done": 1, "message": "a\x00"}, r"\$\.message contains a NUL character"),
        ({"done": 1, "unit": b"rows"}, r"\$\.unit is bytes"),
    ],
)
def test_progress_json_cannot_hold_raises_at_its_write(
    kwargs: dict[str, Any], message: str
) -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=0)
    with pytest.raises(ResultNotJSON, match=message):
        ctx.progress(**kwargs)
    assert store.saves == []


def test_progress_json_cannot_hold_fails_at_a_pause_in_task_code() -> None:
    ctx = make(MemoryStore(), flush_interval=3600)
    ctx.progress(1)  # the first write
    ctx.request_stop("cancel")
    with pytest.raises(ResultNotJSON, match=r"\$\.done is nan"):
        ctx.progress(NAN)
    assert "progress" not in ctx.pending_writes()  # never handed to the runner


def test_progress_figures_near_the_float_limit_stay_json() -> None:
    doc = snapshot(1.7e308, 1.7e308, None, None, rate=INF)
    assert doc["rate"] is None and doc["eta_seconds"] is None
    assert strictjson.problem(snapshot(1.0, 1.7e308, None, None, rate=1e-300)) is None


def test_add_reports_an_overflow_to_infinity() -> None:
    from tether.exceptions import InvalidParams
    from tether.tasks.builtin import add

    ctx = make(MemoryStore())
    with pytest.raises(
        InvalidParams, match=r"the sum overflows to infinity \(1e\+308 \+ 1e\+308\)"
    ):
        add(ctx, operand1=1e308, operand2=1e308)
    with pytest.raises(InvalidParams, match="overflows to infinity"):
        add(ctx, operand1=10**400, operand2=1.0)
    assert add(ctx, operand1=1e308, operand2=-1e308)["sum"] == 0
