"""Faults with real processes on PostgreSQL + Redis: `tether serve` (API only), `tether
worker` processes and a private `redis-server` per test (never the shared one on 6379:
these tests kill their broker). Skipped locally without the services, failed in CI.

- a worker SIGKILLed 10 times at random moments while a checkpointing task runs: no
  step lost, none done twice (the seed is printed; TETHER_FAULT_SEED=<seed> replays it);
- the broker killed and restarted (losing every message) with 200 tasks queued, and
  again mid-flight: each runs exactly once, and the API keeps answering meanwhile;
- a submit while the broker is down answers 503 and creates nothing;
- a cancel while every worker is down (SIGTERM and SIGKILL): rolled back once they are
  back, never run again; a rollback cut short by a worker stop or crash resumes on
  another worker.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.celery_fixtures import PrivateRedis, Workers, pg_query, pg_rows
from tests.acceptance.conftest import (
    ServerFactory,
    events,
    get_task,
    login,
    submit,
    wait_for,
    wait_progress,
    wait_until,
)
from tests.acceptance.tasks import HOLD_ROLLBACK_FILE

LEASE = 2  # seconds: a killed worker's task is recovered within a few seconds
REPUBLISH = 2  # seconds before a queued task whose message may be lost is sent again
LEASE_REASON = "recovered after a lost worker"


@pytest.fixture
def celery_env(pg_database: str, private_redis: PrivateRedis) -> dict[str, str]:
    """Every process of these tests uses a fresh database and the test's own broker."""
    return {
        "TETHER_DATABASE_URL": pg_database,
        "TETHER_BROKER_URL": private_redis.url,
        "TETHER_LEASE_SECONDS": str(LEASE),
        "TETHER_REPUBLISH_SECONDS": str(REPUBLISH),
    }


def holder(env: dict[str, str], task_id: int) -> tuple[str, str | None, int]:
    """(status, worker, recoveries) of a task, straight from the database."""
    [(status, owner, recoveries)] = pg_query(
        env, "SELECT status, worker, recoveries FROM tether_task WHERE id = %s", [task_id]
    )
    return status, owner, recoveries


def held_by(
    env: dict[str, str], task_id: int, proc: subprocess.Popen[bytes], status: str = "running"
) -> bool:
    now, owner, _ = holder(env, task_id)
    return now == status and owner is not None and owner.endswith(Workers.worker_id_suffix(proc))


def poll(check: Callable[[], Any], timeout: float) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return value


def start_workers(worker: Workers, n: int = 2) -> list[subprocess.Popen[bytes]]:
    """``n`` workers started side by side (not one after the other); once all are ready."""
    procs = [worker(wait=False) for _ in range(n)]
    for proc in procs:
        worker.wait_ready(proc)
    return procs


def contiguous(rows: list[int]) -> bool:
    return rows == list(range(1, len(rows) + 1))


# -- 1. a worker SIGKILLed 10 times ---------------------------------------------------------
KILLS = 10
MAX_DELAY = 0.6  # seconds from the task being seen claimed to the kill
STEP_MS = 8
# A step takes at least STEP_MS, so at most 10 * (0.6 + ~0.1 s to see the claim) * 125 =
# 875 steps run before the last kill on any machine: the task outlives every kill.
STEPS = 900


def test_worker_sigkilled_ten_times_loses_and_duplicates_no_step(
    server: ServerFactory, worker: Workers, celery_env: dict[str, str]
) -> None:
    """Two workers run at any time: the one holding the task is killed, a replacement
    starts at once (so recovery never waits for a Python start), and the task is
    recovered by whichever live worker gets its re-published message."""
    seed = int(os.environ.get("TETHER_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault seed {seed} (replay: TETHER_FAULT_SEED={seed})")
    rng = random.Random(seed)
    srv = server(**celery_env)
    c = login(srv)
    start_workers(worker)
    tid = submit(c, "ledger_durable", {"steps": STEPS, "step_ms": STEP_MS})["id"]

    def running_on() -> subprocess.Popen[bytes] | None:
        return next((p for p in worker.alive() if held_by(celery_env, tid, p)), None)

    log: list[str] = []
    for kill in range(1, KILLS + 1):
        began = time.monotonic()
        victim = wait_until(
            running_on, f"task {tid} running (kill {kill}, seed {seed})", timeout=30
        )
        recovered = time.monotonic() - began
        delay = rng.uniform(0.0, MAX_DELAY)
        time.sleep(delay)
        assert held_by(celery_env, tid, victim), (
            f"kill {kill}: task {tid} not running on pid {victim.pid} any more: "
            f"{holder(celery_env, tid)} (seed {seed}; raise STEPS if it finished)"
        )
        worker.kill(victim)
        status, owner, recoveries = holder(celery_env, tid)
        # the process just killed held the task: nothing else could have moved it since
        assert status == "running" and owner is not None, (status, owner)
        assert owner.endswith(Workers.worker_id_suffix(victim)), (owner, victim.pid)
        rows = pg_rows(celery_env, tid)
        assert contiguous(rows), f"kill {kill} (seed {seed}): rows not 1..n: {rows}"
        log.append(
            f"kill {kill}: pid {victim.pid}, running again after {recovered:.2f}s, "
            f"killed {delay:.3f}s later: {recoveries} recoveries before, {len(rows)} rows"
        )
        worker(wait=False)  # the replacement
    print("\n".join(log))

    done = wait_for(c, tid, "succeeded", timeout=60)
    assert pg_rows(celery_env, tid) == list(range(1, STEPS + 1)), f"seed {seed}"
    assert (done["attempts"], done["recoveries"]) == (1, KILLS), (done, seed)  # no attempt used
    assert done["result"]["attempt"] == 1
    history = events(c, tid)
    assert [e["to_status"] for e in history] == (
        ["queued", "running"] + ["queued", "running"] * KILLS + ["succeeded"]
    ), history
    requeues = [e for e in history if e["from_status"] == "running" and e["to_status"] == "queued"]
    assert len(requeues) == KILLS
    assert all(
        e["reason"].startswith(f"{LEASE_REASON} ({n} of 20)") and e["actor"].startswith("celery:")
        for n, e in enumerate(requeues, 1)
    ), requeues


# -- 2. the broker restarted with 200 tasks --------------------------------------------------
TASKS = 200


def task_counts(env: dict[str, str], ids: list[int]) -> dict[str, int]:
    rows = pg_query(
        env, "SELECT status, count(*) FROM tether_task WHERE id = ANY(%s) GROUP BY status", [ids]
    )
    return {status: n for status, n in rows}


def api_answers_while_broker_is_down(c: httpx.Client, srv_url: str, ids: list[int]) -> None:
    assert httpx.get(f"{srv_url}/api/v1/health", timeout=5).status_code == 200
    r = c.get("/tasks", params={"page_size": 10})
    assert r.status_code == 200, r.text
    assert r.json()["count"] == len(ids)
    assert get_task(c, ids[0])["id"] == ids[0]
    assert len(events(c, ids[-1])) >= 1


def test_broker_restart_with_200_tasks_queued_runs_each_exactly_once(
    server: ServerFactory, worker: Workers, celery_env: dict[str, str], private_redis: PrivateRedis
) -> None:
    srv = server(**celery_env)
    c = login(srv)
    ids = [submit(c, "ledger", {"steps": 1, "step_ms": 20})["id"] for _ in range(TASKS)]
    wait_until(
        lambda: private_redis.queued_messages() == TASKS,  # no worker yet
        f"{TASKS} messages in the broker",
        timeout=10,
    )

    private_redis.kill()  # every message is gone
    api_answers_while_broker_is_down(c, srv.url, ids)
    private_redis.start()
    assert private_redis.queued_messages() == 0
    worker()  # finds no message: the reaper re-publishes the queued tasks

    # and once more mid-flight, with a worker running tasks
    wait_until(
        lambda: task_counts(celery_env, ids).get("succeeded", 0) >= 20,
        "20 tasks done after the first broker restart",
        timeout=30,
    )
    private_redis.kill()
    mid = task_counts(celery_env, ids)
    api_answers_while_broker_is_down(c, srv.url, ids)
    private_redis.start()
    print(f"second broker restart with tasks at {mid}")
    assert mid.get("succeeded", 0) < TASKS, "all done before the second restart"

    wait_until(
        lambda: task_counts(celery_env, ids).get("succeeded", 0) == TASKS,
        f"all {TASKS} tasks succeeded",
        timeout=60,
    )
    assert task_counts(celery_env, ids) == {"succeeded": TASKS}
    ledger = pg_query(
        celery_env,
        "SELECT task_id, step FROM acc_ledger WHERE task_id = ANY(%s) ORDER BY task_id",
        [ids],
    )
    assert ledger == [(i, 1) for i in sorted(ids)]  # each ran its step exactly once
    history: dict[int, list[tuple[str | None, str, str]]] = defaultdict(list)
    for task_id, src, dst, reason in pg_query(
        celery_env,
        "SELECT task_id, from_status, to_status, reason "
        "FROM tether_taskevent WHERE task_id = ANY(%s) ORDER BY id",
        [ids],
    ):
        history[task_id].append((src, dst, reason))
    # one claim and one success each: nothing ran twice, nothing was retried
    odd = {
        i: h
        for i, h in history.items()
        if [dst for _, dst, _ in h] != ["queued", "running", "succeeded"]
    }
    assert odd == {}
    assert sorted(history) == sorted(ids)


def test_submit_while_broker_down_answers_503_and_creates_nothing(
    server: ServerFactory, worker: Workers, celery_env: dict[str, str], private_redis: PrivateRedis
) -> None:
    from tether.executors.celery_executor import Publisher

    srv = server(**celery_env)
    c = login(srv)
    worker()
    first = submit(c, "add", {"operand1": 1, "operand2": 2})["id"]
    assert wait_for(c, first, "succeeded")["result"]["sum"] == 3

    private_redis.kill()
    # the server trusts a broker check for HEALTH_TTL seconds (a submit in that window is
    # accepted, and its task published by the reaper later): ask after it has run out
    time.sleep(Publisher.HEALTH_TTL + 0.2)
    began = time.monotonic()
    r = c.post("/tasks", json={"type": "add", "params": {"operand1": 2, "operand2": 2}})
    took = time.monotonic() - began
    assert r.status_code == 503, (r.status_code, r.text, f"{took:.2f}s")
    assert r.json()["error"]["code"] == "broker_unavailable", r.text
    assert took < 5, f"the 503 took {took:.2f}s"
    listing = c.get("/tasks")
    assert listing.status_code == 200, listing.text
    assert [t["id"] for t in listing.json()["results"]] == [first]  # nothing created

    private_redis.start()  # back (empty): submit works again (once the server has seen
    answers: list[int] = []  # it back: a failed check is trusted for HEALTH_TTL too)

    def accepted() -> dict[str, Any] | None:
        r = c.post("/tasks", json={"type": "add", "params": {"operand1": 20, "operand2": 22}})
        answers.append(r.status_code)
        assert r.status_code in (201, 503), r.text
        return dict(r.json()) if r.status_code == 201 else None

    tid = wait_until(accepted, "a submit accepted after the broker is back", timeout=10)["id"]
    assert c.get("/tasks").json()["count"] == 2, answers  # the 503s created nothing
    assert wait_for(c, tid, "succeeded", timeout=45)["result"]["sum"] == 42


# -- 3. cancel while every worker is down ------------------------------------------------------
def signal_all(worker: Workers, procs: list[subprocess.Popen[bytes]], how: signal.Signals) -> None:
    """Every worker goes down at once: SIGTERM (warm shutdown) or SIGKILL (a crash)."""
    took = worker.signal(procs, how)
    print(f"{len(procs)} worker(s) down {took:.2f}s after {how.name}")
    hung = [p.pid for p in procs if p.pid in worker.hung]
    assert not hung, (
        f"workers {hung} still running {took:.1f}s after {how.name}; "
        f"stacks in their logs: {[worker.output(p)[-8000:] for p in procs]}"
    )


def wait_rollback_taken(
    c: httpx.Client,
    env: dict[str, str],
    task_id: int,
    procs: list[subprocess.Popen[bytes]],
    timeout: float = 15,
) -> None:
    """Until one of ``procs`` holds the task in ``cancelling``: its rollback runs there."""
    seen: set[tuple[str, str | None]] = set()

    def rolling_back() -> bool:
        status, owner, _ = holder(env, task_id)
        seen.add((status, owner))
        return any(held_by(env, task_id, p, "cancelling") for p in procs)

    if not poll(rolling_back, timeout=timeout):
        pytest.fail(
            f"no live worker took up the rollback of task {task_id} in {timeout:g}s;"
            f" (status, worker) seen: {sorted(seen, key=str)}; events: "
            f"{[(e['to_status'], e['reason']) for e in events(c, task_id)]}"
        )


def finish_rollback(
    c: httpx.Client,
    env: dict[str, str],
    task_id: int,
    gate: Path,
    at_cancel: list[int],
    n_events: int,
) -> None:
    """The rollback is held at ``gate``: no step may be added meanwhile. Then let it end;
    it must remove every row, end ``cancelled``, and the task must never run again."""
    assert pg_rows(env, task_id) == at_cancel  # the rollback runs; the task does not
    gate.unlink()
    assert wait_for(c, task_id, "cancelled", timeout=20)["status"] == "cancelled"
    assert pg_rows(env, task_id) == []
    # the messages still queued for it are consumed before a later task's, and nothing
    # re-publishes a cancelled task: a second after a later task ran it is still quiet
    probe = submit(c, "add", {"operand1": 1, "operand2": 1})["id"]
    wait_for(c, probe, "succeeded")
    settle = time.monotonic() + 1.0
    while time.monotonic() < settle:
        assert get_task(c, task_id)["status"] == "cancelled"
        time.sleep(0.2)
    history = events(c, task_id)
    after_cancel = history[n_events - 1 :]
    assert [e["to_status"] for e in after_cancel] == ["cancelling", "cancelled"], history
    assert after_cancel[-1]["reason"] == "rollback done"
    assert pg_rows(env, task_id) == []


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_cancel_while_all_workers_are_down_rolls_back_and_never_runs_again(
    how: signal.Signals,
    server: ServerFactory,
    worker: Workers,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    srv = server(**celery_env)
    c = login(srv)
    first = start_workers(worker)
    tid = submit(c, "ledger", {"steps": 5000, "step_ms": 5, "hold_rollback": True})["id"]
    wait_progress(c, tid, 20)
    signal_all(worker, first, how)
    status, owner, _ = holder(celery_env, tid)
    if how == signal.SIGTERM:  # a warm shutdown hands the task back
        assert (status, owner) == ("queued", None)
        assert events(c, tid)[-1]["reason"] == "server shutdown"
    else:  # a crash leaves it held by a dead worker until its lease runs out
        assert status == "running" and owner is not None
    at_cancel = pg_rows(celery_env, tid)
    assert len(at_cancel) >= 20 and contiguous(at_cancel), at_cancel

    gate = tmp_path / HOLD_ROLLBACK_FILE  # in the workers' TETHER_HOME: rollbacks wait
    gate.touch()
    r = c.post(f"/tasks/{tid}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "cancelling"  # it has a checkpoint: there is work to undo
    n_events = len(events(c, tid))

    second = start_workers(worker)  # the workers come back
    wait_rollback_taken(c, celery_env, tid, second)
    finish_rollback(c, celery_env, tid, gate, at_cancel, n_events)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_rollback_cut_short_by_worker_loss_resumes_on_another_worker(
    how: signal.Signals,
    server: ServerFactory,
    worker: Workers,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The contract: a crash (or stop) during a rollback resumes the rollback, not the
    task."""
    srv = server(**celery_env)
    c = login(srv)
    [first] = start_workers(worker, 1)
    tid = submit(c, "ledger", {"steps": 5000, "step_ms": 5, "hold_rollback": True})["id"]
    wait_progress(c, tid, 20)
    gate = tmp_path / HOLD_ROLLBACK_FILE
    gate.touch()
    assert c.post(f"/tasks/{tid}/cancel").status_code == 202
    n_events = len(events(c, tid))
    wait_rollback_taken(c, celery_env, tid, [first])
    at_cancel = pg_rows(celery_env, tid)
    assert len(at_cancel) >= 20 and contiguous(at_cancel), at_cancel

    signal_all(worker, [first], how)  # in the middle of the rollback
    assert holder(celery_env, tid)[0] == "cancelling"
    second = start_workers(worker, 1)
    wait_rollback_taken(c, celery_env, tid, second)
    finish_rollback(c, celery_env, tid, gate, at_cancel, n_events)
