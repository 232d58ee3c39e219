"""The contract of DESIGN.md, checked through the HTTP API with the same assertions on
every deployment (see conftest.py). Test task types: tests/acceptance/tasks.py."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import httpx

from tests.acceptance.conftest import (
    assert_error,
    assert_event_chain,
    events,
    get_task,
    submit,
    wait_for,
    wait_progress,
    wait_until,
)
from tests.conformance.conftest import (
    FINAL,
    Deployment,
    all_slots_busy,
    statuses,
    task_ids,
    wait_ledger,
)
from tether.datasets import generate

LONG = {"steps": 5000, "step_ms": 5}  # a ledger task that runs until it is stopped


def pause_and_wait(client: httpx.Client, task_id: int) -> dict[str, Any]:
    r = client.post(f"/tasks/{task_id}/pause")
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("pausing", "paused"), r.json()
    return wait_for(client, task_id, "paused")


def test_submit_runs_to_success_with_result_and_history(
    deployment: Deployment, api: httpx.Client
) -> None:
    add = submit(api, "add", {"operand1": 2, "operand2": 3.5})
    assert add["status"] == "queued" and add["type"] == "add", add
    assert add["params"] == {"operand1": 2, "operand2": 3.5}
    fib = submit(api, "fibonacci", {"n": 90})["id"]
    steps = submit(api, "ledger", {"steps": 3, "step_ms": 0})["id"]

    task = wait_for(api, add["id"], FINAL)
    assert task["status"] == "succeeded", task
    assert task["result"]["sum"] == 5.5, task
    assert task["error"] in (None, ""), task
    assert task["attempts"] == 1
    assert task["created_at"] and task["started_at"] and task["finished_at"], task
    assert wait_for(api, fib, FINAL)["result"]["value"] == "2880067194370816120"
    done = wait_for(api, steps, FINAL)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"steps": 3, "started_from": 0, "attempt": 1}
    assert deployment.ledger(steps) == [1, 2, 3]

    for task_id in (add["id"], fib, steps):
        history = events(api, task_id)
        assert statuses(history) == ["queued", "running", "succeeded"], history
        assert_event_chain(history)


def test_progress_is_visible_while_running(deployment: Deployment, api: httpx.Client) -> None:
    tid = submit(api, "ledger", {"steps": 100, "step_ms": 10})["id"]
    seen: list[dict[str, Any]] = []

    def running_progress() -> bool:
        task = get_task(api, tid)
        assert task["status"] in ("queued", "running"), task
        progress = task["progress"] or {}
        if task["status"] == "running" and progress.get("done"):
            seen.append(progress)
        return len({p["done"] for p in seen}) >= 3 and any(p["rate"] for p in seen)

    wait_until(running_progress, f"task {tid}: live progress")
    dones = [p["done"] for p in seen]
    assert dones == sorted(dones), dones
    for p in seen:
        assert p["total"] == 100 and p["unit"] == "rows", p
        assert 0 < p["done"] < 100, p
        assert p["percent"] == round(p["done"] / 100 * 100, 2), p
    live = next(p for p in seen if p["rate"])
    assert live["rate"] > 0 and live["eta_seconds"] is not None and live["eta_seconds"] >= 0

    task = wait_for(api, tid, FINAL)
    assert task["status"] == "succeeded", task
    assert task["progress"]["done"] == task["progress"]["total"] == 100
    assert task["progress"]["percent"] == 100


def test_pause_running_then_resume_applies_each_step_once(
    deployment: Deployment, api: httpx.Client
) -> None:
    tid = submit(api, "ledger", {"steps": 120, "step_ms": 5})["id"]
    wait_ledger(deployment, tid, 10)
    paused = pause_and_wait(api, tid)
    assert paused["paused_at"], paused
    at_pause = deployment.ledger(tid)
    assert at_pause == list(range(1, len(at_pause) + 1)), at_pause
    assert 10 <= len(at_pause) < 120
    held = get_task(api, tid)
    assert held["status"] == "paused"
    assert held["progress"]["done"] >= 10 and held["progress"]["eta_seconds"] is None
    assert deployment.ledger(tid) == at_pause  # a paused task does not run on

    r = api.post(f"/tasks/{tid}/resume")
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("queued", "running"), r.json()
    task = wait_for(api, tid, FINAL)
    assert task["status"] == "succeeded", task
    assert task["result"]["started_from"] == len(at_pause), task  # from its checkpoint
    assert deployment.ledger(tid) == list(range(1, 121))  # every step exactly once
    history = events(api, tid)
    assert statuses(history) == [
        "queued",
        "running",
        "pausing",
        "paused",
        "queued",
        "running",
        "succeeded",
    ]
    username = task["owner"]
    by_move = {(e["from_status"], e["to_status"]): e for e in history}
    assert by_move[("running", "pausing")]["actor"] == f"user:{username}"
    assert by_move[("paused", "queued")]["actor"] == f"user:{username}"


def test_cancel_running_rolls_back_its_ledger_rows(
    deployment: Deployment, api: httpx.Client
) -> None:
    keep = submit(api, "ledger", {"steps": 4, "step_ms": 0})["id"]
    assert wait_for(api, keep, FINAL)["status"] == "succeeded"
    tid = submit(api, "ledger", LONG)["id"]
    wait_ledger(deployment, tid, 5)

    r = api.post(f"/tasks/{tid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("cancelling", "cancelled"), r.json()
    task = wait_for(api, tid, FINAL)
    assert task["status"] == "cancelled", task
    assert deployment.ledger(tid) == []  # the rollback undid its rows
    assert deployment.ledger(keep) == [1, 2, 3, 4]  # and only its rows
    history = events(api, tid)
    assert statuses(history)[-2:] == ["cancelling", "cancelled"], history
    assert history[-2]["from_status"] in ("running", "pausing"), history


def test_task_ignoring_cancel_is_terminated_after_grace_and_rolled_back(
    deployment: Deployment, api: httpx.Client
) -> None:
    """A task that reaches no control point is hard-terminated TETHER_CANCEL_GRACE_SECONDS
    (1 s here) after a cancel, then rolled back; its thread is free again."""
    tid = submit(api, "stubborn", {})["id"]
    wait_ledger(deployment, tid, 1)
    r = api.post(f"/tasks/{tid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelling", r.json()  # it ignores the request
    task = wait_for(api, tid, FINAL, timeout=15)
    assert task["status"] == "cancelled", task
    assert deployment.ledger(tid) == []
    assert statuses(events(api, tid))[-2:] == ["cancelling", "cancelled"]
    probe = submit(api, "add", {"operand1": 1, "operand2": 1})["id"]
    assert wait_for(api, probe, FINAL)["status"] == "succeeded"


def test_cancel_queued_task_never_runs(deployment: Deployment, api: httpx.Client) -> None:
    with all_slots_busy(deployment, api):
        tid = submit(api, "ledger", {"steps": 3, "step_ms": 0})["id"]
        assert get_task(api, tid)["status"] == "queued"
        r = api.post(f"/tasks/{tid}/cancel")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "cancelled", r.json()  # nothing to undo: at once
    # the slots are free again: a later task runs, the cancelled one still does not
    probe = submit(api, "add", {"operand1": 1, "operand2": 1})["id"]
    assert wait_for(api, probe, FINAL)["status"] == "succeeded"
    task = get_task(api, tid)
    assert task["status"] == "cancelled", task
    assert task["started_at"] is None, task
    assert statuses(events(api, tid)) == ["queued", "cancelling", "cancelled"]
    assert deployment.ledger(tid) == []


def short_burst(client: httpx.Client, n: int = 25) -> None:
    """Run ``n`` short tasks: the executors' recent average task duration becomes short,
    so they claim tasks ahead of free threads."""
    burst = [submit(client, "add", {"operand1": i, "operand2": 0})["id"] for i in range(n)]
    for task_id in burst:
        assert wait_for(client, task_id, FINAL)["status"] == "succeeded"


def test_claimed_ahead_tasks_never_keep_a_control_request_waiting(
    deployment: Deployment, api: httpx.Client
) -> None:
    """After many short tasks the executors claim ahead of free threads. Still: as many
    long tasks as there are slots all get to run (a claimed task that finds no free
    thread is handed back to the queue within seconds), and a task claimed while every
    slot is busy is paused or cancelled at once, not after the long task ahead of it."""
    short_burst(api)
    longs = [
        submit(api, "countdown", {"seconds": 600, "tick_ms": 20})["id"]
        for _ in range(deployment.slots)
    ]

    def not_started() -> list[dict[str, Any]]:
        tasks = [get_task(api, task_id) for task_id in longs]
        return [t for t in tasks if not (t["progress"] or {}).get("done")]

    deadline = time.monotonic() + 6  # hand-back after 1 s, maintenance every second
    while (waiting := not_started()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not waiting, [(t["id"], t["status"], t["started_at"]) for t in waiting]

    doomed = submit(api, "ledger", {"steps": 3, "step_ms": 0})["id"]
    held = submit(api, "ledger", {"steps": 3, "step_ms": 0})["id"]
    # claimed ahead, or still queued: both must answer at once
    r = api.post(f"/tasks/{doomed}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelled", r.json()
    r = api.post(f"/tasks/{held}/pause")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "paused", r.json()
    assert deployment.ledger(doomed) == [] and deployment.ledger(held) == []
    waiter = submit(api, "ledger", {"steps": 3, "step_ms": 0})["id"]
    # if it was claimed ahead, it is handed back: queued again, never started
    handed_back = wait_for(api, waiter, ["queued"], timeout=30)
    assert not (handed_back["progress"] or {}).get("done"), handed_back
    for task_id in longs:
        api.post(f"/tasks/{task_id}/cancel")
    assert wait_for(api, waiter, FINAL, timeout=30)["status"] == "succeeded"
    api.post(f"/tasks/{held}/resume")
    assert wait_for(api, held, FINAL, timeout=30)["status"] == "succeeded"
    assert deployment.ledger(held) == [1, 2, 3]


def test_pause_queued_task_then_resume(deployment: Deployment, api: httpx.Client) -> None:
    with all_slots_busy(deployment, api):
        tid = submit(api, "ledger", {"steps": 5, "step_ms": 0})["id"]
        r = api.post(f"/tasks/{tid}/pause")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "paused", r.json()  # it held no slot: paused at once
        r = api.post(f"/tasks/{tid}/resume")
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "queued", r.json()
    task = wait_for(api, tid, FINAL)
    assert task["status"] == "succeeded", task
    assert deployment.ledger(tid) == [1, 2, 3, 4, 5]
    assert statuses(events(api, tid)) == ["queued", "paused", "queued", "running", "succeeded"]


def test_cancel_paused_task_rolls_back(deployment: Deployment, api: httpx.Client) -> None:
    tid = submit(api, "ledger", LONG)["id"]
    wait_ledger(deployment, tid, 5)
    pause_and_wait(api, tid)
    assert deployment.ledger(tid)

    r = api.post(f"/tasks/{tid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] in ("cancelling", "cancelled"), r.json()
    task = wait_for(api, tid, FINAL)
    assert task["status"] == "cancelled", task
    assert deployment.ledger(tid) == []
    assert statuses(events(api, tid))[-3:] == ["paused", "cancelling", "cancelled"]


def test_failing_task_is_retried_then_fails_and_flaky_one_succeeds(
    deployment: Deployment, api: httpx.Client
) -> None:
    fid = submit(api, "flaky", {})["id"]
    aid = submit(api, "always_fails", {})["id"]

    flaky = wait_for(api, fid, FINAL)
    assert flaky["status"] == "succeeded", flaky
    assert flaky["attempts"] == 2 and flaky["result"] == {"attempt": 2}, flaky
    history = events(api, fid)
    assert statuses(history) == ["queued", "running", "queued", "running", "succeeded"]
    assert "retry" in history[2]["reason"], history
    assert "flaky failure on attempt 1" in history[2]["reason"], history

    failed = wait_for(api, aid, FINAL)
    assert failed["status"] == "failed", failed
    assert failed["attempts"] == failed["max_attempts"] == 2, failed
    assert "always fails (attempt 2)" in failed["error"], failed
    assert failed["result"] is None, failed
    assert statuses(events(api, aid)) == ["queued", "running", "queued", "running", "failed"]


def test_illegal_transitions_answer_409_and_change_nothing(
    deployment: Deployment, api: httpx.Client
) -> None:
    def refused(task_id: int, action: str, current: str) -> None:
        before = events(api, task_id)
        err = assert_error(api.post(f"/tasks/{task_id}/{action}"), 409, "illegal_transition")
        assert err["status"] == current, err
        assert get_task(api, task_id)["status"] == current
        assert events(api, task_id) == before

    finished = submit(api, "add", {"operand1": 1, "operand2": 2})["id"]
    assert wait_for(api, finished, FINAL)["status"] == "succeeded"
    for action in ("pause", "resume", "cancel"):
        refused(finished, action, "succeeded")

    tid = submit(api, "ledger", LONG)["id"]
    wait_ledger(deployment, tid, 1)
    err = assert_error(api.post(f"/tasks/{tid}/resume"), 409, "illegal_transition")
    assert err["status"] in ("running", "pausing"), err
    pause_and_wait(api, tid)
    refused(tid, "pause", "paused")
    assert api.post(f"/tasks/{tid}/cancel").status_code == 202
    assert wait_for(api, tid, FINAL)["status"] == "cancelled"
    for action in ("pause", "resume", "cancel"):
        refused(tid, action, "cancelled")


def test_another_users_task_is_404(deployment: Deployment, api: httpx.Client) -> None:
    tid = submit(api, "ledger", LONG)["id"]
    wait_ledger(deployment, tid, 1)
    with deployment.login() as other:
        for method, path in [
            ("GET", f"/tasks/{tid}"),
            ("GET", f"/tasks/{tid}/events"),
            ("POST", f"/tasks/{tid}/pause"),
            ("POST", f"/tasks/{tid}/resume"),
            ("POST", f"/tasks/{tid}/cancel"),
        ]:
            assert_error(other.request(method, path), 404, "not_found")
        assert task_ids(other) == []
        assert_error(other.get("/tasks/987654321"), 404, "not_found")  # same as missing
    assert get_task(api, tid)["status"] == "running"  # nothing changed
    assert statuses(events(api, tid)) == ["queued", "running"]
    assert tid in task_ids(api)


def test_bad_params_answer_400_and_create_nothing(
    deployment: Deployment, api: httpx.Client
) -> None:
    done = submit(api, "add", {"operand1": 1, "operand2": 1})["id"]
    before = task_ids(api)
    err = assert_error(api.post("/tasks", json={"type": "no-such-type", "params": {}}), 400)
    assert "no-such-type" in err["message"], err
    for params in ({"seconds": -1}, {"seconds": "ten"}, {"seconds": 1, "extra": 1}, {}):
        err = assert_error(api.post("/tasks", json={"type": "countdown", "params": params}), 400)
        assert err["message"], err
    err = assert_error(api.post("/tasks", json={"type": "fibonacci", "params": {"n": 10**9}}), 400)
    assert "n" in err["message"], err
    assert_error(
        api.post(
            "/tasks",
            json={
                "type": "add",
                "params": {"operand1": 1, "operand2": 1},
                "queue": "no spaces allowed",
            },
        ),
        400,
    )
    assert_error(api.post("/tasks", json={"params": {}}), 400)
    assert_error(
        api.post(
            "/tasks",
            content=b'{"type": "add", "params": {',
            headers={"Content-Type": "application/json"},
        ),
        400,
    )
    assert_error(api.get("/tasks", params={"status": "sleeping"}), 400)
    assert task_ids(api) == before  # nothing was created
    assert wait_for(api, done, FINAL)["status"] == "succeeded"


def test_pause_expiry_cancels_with_rollback(deployment: Deployment, api: httpx.Client) -> None:
    task = submit(api, "ledger", LONG, pause_timeout=1)
    assert task["pause_timeout"] == 1
    tid = task["id"]
    wait_ledger(deployment, tid, 3)
    r = api.post(f"/tasks/{tid}/pause")
    assert r.status_code == 202, r.text
    task = wait_for(api, tid, FINAL)
    assert task["status"] == "cancelled", task
    assert deployment.ledger(tid) == []
    history = events(api, tid)
    assert statuses(history) == [
        "queued",
        "running",
        "pausing",
        "paused",
        "cancelling",
        "cancelled",
    ], history
    expired = [
        (e["from_status"], e["to_status"]) for e in history if e["reason"] == "pause_expired"
    ]
    assert expired == [("paused", "cancelling")], history


def test_list_filters_by_status_and_type(deployment: Deployment, api: httpx.Client) -> None:
    done = submit(api, "add", {"operand1": 1, "operand2": 1})["id"]
    assert wait_for(api, done, FINAL)["status"] == "succeeded"
    paused = submit(api, "ledger", LONG)["id"]
    wait_ledger(deployment, paused, 1)
    pause_and_wait(api, paused)
    running = submit(api, "countdown", {"seconds": 600})["id"]
    wait_progress(api, running, 1)

    assert task_ids(api) == [running, paused, done]  # newest first
    assert task_ids(api, status="succeeded") == [done]
    assert task_ids(api, status="running") == [running]
    assert task_ids(api, status="running,paused") == [running, paused]
    assert task_ids(api, status="cancelled") == []
    assert task_ids(api, type="add") == [done]
    assert task_ids(api, status="paused", type="ledger") == [paused]
    assert task_ids(api, status="running", type="add") == []


def _upload(api: httpx.Client, text: str, dataset: str) -> int:
    r = api.post(
        "/datasets/import", files={"file": ("orders.csv", text.encode())}, data={"dataset": dataset}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _ids(api: httpx.Client, dataset: str, rows: int) -> list[int]:
    ids: list[int] = []
    for offset in range(0, rows, 1000):
        r = api.get(f"/datasets/{dataset}/rows", params={"limit": 1000, "offset": offset})
        assert r.status_code == 200, r.text
        ids += [row[0] for row in r.json()["rows"]]
    return ids


def test_csv_import_pause_resume_export_and_cancel(
    deployment: Deployment, api: httpx.Client
) -> None:
    """Datasets on every deployment (on Celery: uploads received by the API server,
    imported and exported by workers through the shared data directory)."""
    rows = 20_000
    buf = io.StringIO()
    generate.write(buf, rows, seed=21)
    tid = _upload(api, buf.getvalue(), "orders")
    wait_progress(api, tid, 1000, timeout=60)
    pause_and_wait(api, tid)
    assert api.get("/datasets/orders").status_code == 404  # nothing visible yet
    assert api.post(f"/tasks/{tid}/resume").status_code == 202
    done = wait_for(api, tid, FINAL, timeout=120)
    assert done["status"] == "succeeded", done
    assert api.get("/datasets/orders").json()["row_count"] == rows
    assert _ids(api, "orders", rows) == list(range(1, rows + 1))  # none lost, none twice

    body = {"date_column": "ship_date", "from_date": "2021-01-01", "to_date": "2022-06-30"}
    r = api.post("/datasets/orders/export", json=body)
    assert r.status_code == 201, r.text
    exp = wait_for(api, int(r.json()["id"]), FINAL, timeout=120)
    assert exp["status"] == "succeeded", exp
    got = api.get(f"/tasks/{exp['id']}/download")
    assert got.status_code == 200, got.text
    back = list(csv.reader(io.StringIO(got.text, newline="")))
    source = list(csv.DictReader(io.StringIO(buf.getvalue(), newline="")))
    wanted = [int(s["id"]) for s in source if "2021-01-01" <= s["ship_date"] <= "2022-06-30"]
    assert back[0] == list(source[0]) and [int(b[0]) for b in back[1:]] == wanted

    second = _upload(api, buf.getvalue(), "orders2")
    wait_progress(api, second, 1000, timeout=60)
    assert api.post(f"/tasks/{second}/cancel").status_code == 202
    assert wait_for(api, second, FINAL, timeout=60)["status"] == "cancelled"
    assert api.get("/datasets/orders2").status_code == 404
    assert [d["name"] for d in api.get("/datasets").json()] == ["orders"]


def test_a_result_json_cannot_hold_fails_its_own_task_and_no_other(
    deployment: Deployment, api: httpx.Client
) -> None:
    """Successes are written in groups: four poisoned results among 100 tasks fail
    alone, and every other task succeeds on its first run (a lost group write would
    leave them running until their lease expired, then run them again)."""
    sums: dict[int, float] = {}
    poisoned: dict[int, str] = {}
    for i in range(100):
        if i % 25 == 12:
            value = ("inf", "nan", "-inf", "inf")[i // 25]
            poisoned[submit(api, "not_json", {"value": value})["id"]] = value
        else:
            sums[submit(api, "add", {"operand1": i, "operand2": 0.5})["id"]] = i + 0.5
    for task_id, value in poisoned.items():
        task = wait_for(api, task_id, FINAL, timeout=60)
        assert task["status"] == "failed" and task["attempts"] == 1, task
        assert task["error"] == f"result_not_json: the result is not strict JSON: $.sum is {value}"
        assert task["result"] is None, task
        assert statuses(events(api, task_id)) == ["queued", "running", "failed"]
    for task_id, total in sums.items():
        task = wait_for(api, task_id, FINAL, timeout=60)
        assert task["status"] == "succeeded" and task["attempts"] == 1, task
        assert task["result"]["sum"] == total, task
        assert statuses(events(api, task_id)) == ["queued", "running", "succeeded"]
