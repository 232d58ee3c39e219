from __future__ import annotations

import pytest

from tests.unit.fakes import MemoryStore
from tether.context import TaskContext
from tether.exceptions import CancelSignal, LeaseLostSignal, PauseSignal, ShutdownSignal


def make(store: MemoryStore, **kw: object) -> TaskContext:
    return TaskContext(task_id=7, token="tok", store=store, **kw)  # type: ignore[arg-type]


def test_progress_is_coalesced() -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=3600)
    for i in range(1000):
        ctx.progress(i, total=1000, unit="rows")
    assert len(store.saves) == 1  # the first call writes, the rest wait for the interval
    ctx.flush()
    last = store.saves[-1]["progress"]
    assert last["done"] == 999 and last["total"] == 1000 and last["unit"] == "rows"
    assert last["percent"] == pytest.approx(99.9)


def test_progress_keeps_total_unit_message_between_calls() -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=0)
    ctx.progress(1, total=10, unit="frames", message="frame 1")
    ctx.progress(2)
    assert store.saves[-1]["progress"]["total"] == 10
    assert store.saves[-1]["progress"]["message"] == "frame 1"


@pytest.mark.parametrize(
    ("kind", "signal"),
    [("pause", PauseSignal), ("cancel", CancelSignal), ("shutdown", ShutdownSignal)],
)
def test_stop_takes_effect_at_next_control_point(kind: str, signal: type) -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=3600)
    ctx.progress(1)
    assert not ctx.should_stop()
    ctx.request_stop(kind)
    assert ctx.should_stop()
    with pytest.raises(signal):
        ctx.checkpoint({"i": 5}, sync=False)  # a control point: records the state, then stops
    with pytest.raises(signal):
        ctx.progress(2)
    if kind != "shutdown":  # left for the runner's next status change (one transaction)
        assert ctx.pending_writes()["checkpoint"] == {"i": 5}
        assert ctx.pending_writes()["progress"]["done"] == 2
        return
    # pending progress and checkpoint were flushed before stopping
    assert store.saves[-2]["checkpoint"] == {"i": 5}
    assert store.saves[-1]["progress"]["done"] == 2
    assert ctx.pending_writes() == {}


def test_control_signal_is_not_swallowed_by_except_exception() -> None:
    ctx = make(MemoryStore())
    ctx.request_stop("pause")
    with pytest.raises(PauseSignal):
        try:
            ctx.progress(1)
        except Exception:  # typical task code
            pytest.fail("a pause must not be caught by 'except Exception'")


def test_sync_checkpoint_writes_immediately_lazy_one_waits() -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=3600)
    ctx.checkpoint({"a": 1})
    assert store.checkpoints == [{"a": 1}]
    ctx.checkpoint({"a": 2}, sync=False)
    ctx.checkpoint({"a": 3}, sync=False)
    assert store.checkpoints == [{"a": 1}]
    assert ctx.state == {"a": 3}
    ctx.flush()
    assert store.checkpoints == [{"a": 1}, {"a": 3}]


def test_atomic_writes_checkpoint_inside_the_transaction() -> None:
    store = MemoryStore()
    ctx = make(store)
    with ctx.atomic({"offset": 10}):
        store.pending.append("row")
    assert store.saves[-1] == {"progress": None, "checkpoint": {"offset": 10}, "in_tx": True}
    assert store.committed == ["row"]
    assert ctx.state == {"offset": 10}


def test_atomic_does_not_start_when_stop_pending() -> None:
    store = MemoryStore()
    ctx = make(store)
    ctx.request_stop("cancel")
    with pytest.raises(CancelSignal), ctx.atomic({"offset": 1}):
        pytest.fail("block must not run")


@pytest.mark.parametrize(("kind", "signal"), [("pause", PauseSignal), ("shutdown", ShutdownSignal)])
def test_atomic_keep_work_commits_first_then_stops(kind: str, signal: type) -> None:
    """Work done before a pause (or shutdown) arrived is saved with its checkpoint; the
    stop is raised once that has committed."""
    store = MemoryStore()
    ctx = make(store)
    ctx.request_stop(kind)
    with pytest.raises(signal), ctx.atomic({"offset": 7}, keep_work=True):
        store.pending.append("row")
    assert store.committed == ["row"]
    assert store.saves[-1]["checkpoint"] == {"offset": 7} and ctx.state == {"offset": 7}


def test_atomic_keep_work_does_not_start_when_a_cancel_is_pending() -> None:
    store = MemoryStore()
    ctx = make(store)
    ctx.request_stop("cancel")
    with pytest.raises(CancelSignal), ctx.atomic({"offset": 1}, keep_work=True):
        pytest.fail("block must not run: the rollback undoes it all anyway")


def test_atomic_failure_keeps_old_state() -> None:
    store = MemoryStore()
    ctx = make(store, state={"offset": 3})
    with pytest.raises(RuntimeError), ctx.atomic({"offset": 4}):
        store.pending.append("row")
        raise RuntimeError("boom")
    assert ctx.state == {"offset": 3}
    assert store.committed == []


def test_lost_lease_stops_task_and_is_sticky() -> None:
    store = MemoryStore()
    ctx = make(store, flush_interval=0)
    store.owned = False
    with pytest.raises(LeaseLostSignal):
        ctx.progress(1)
    ctx.request_stop("pause")
    assert ctx.stop_requested == "lease_lost"
    ctx.begin_rollback()
    assert ctx.stop_requested == "lease_lost"


def test_rollback_ignores_repeated_cancel_but_not_shutdown() -> None:
    ctx = make(MemoryStore(), flush_interval=0)
    ctx.request_stop("cancel")
    ctx.begin_rollback()
    ctx.request_stop("cancel")  # the maintenance loop re-sends stored requests
    ctx.progress(1)  # does not raise: rollback code may report progress
    ctx.request_stop("shutdown")
    with pytest.raises(ShutdownSignal):
        ctx.progress(2)


def test_unknown_stop_kind() -> None:
    with pytest.raises(ValueError):
        make(MemoryStore()).request_stop("explode")
