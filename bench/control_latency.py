"""Pause and cancel latency over real HTTP, against a real ``tether serve`` subprocess.

Starts ``.venv/bin/tether serve --port <free port>`` with a fresh temporary TETHER_HOME
(SQLite, embedded executor), registers a user and takes a token. Then, per trial:

* pause:  submit ``countdown`` (30 s, tick_ms 1), wait until it is running and has
  progress, then time from just before POST /tasks/{id}/pause until the status is
  ``paused``: in the POST's answer (the embedded executor lets the answer wait up to
  100 ms for the pause to settle) or else in a polled GET. The paused task is
  cancelled afterwards.
* cancel: the same with a fresh task, POST /tasks/{id}/cancel until ``cancelled``.

When the answer still says pausing/cancelling, the client polls GET /tasks/{id} back to
back on one persistent httpx.Client (up to one GET round trip of polling slack).
Diagnostics (not the headline): ``*_post_ms`` is the POST round trip alone and
``*_engine_ms`` the server-side time from the "pausing"/"cancelling" event to the
"paused"/"cancelled" event (read from GET /tasks/{id}/events after the trial).
Percentiles use the nearest-rank method (with 60 trials p99 is the slowest trial).
Progress goes to stderr; the last line of stdout is one JSON object.

    .venv/bin/python bench/control_latency.py [--trials 60] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import _common
from _common import expect, free_port, log, login, summary, tether_env

TARGET = {"p50": 20.0, "p99": 100.0}
COUNTDOWN = {"type": "countdown", "params": {"seconds": 30, "tick_ms": 1}}
WAIT_TIMEOUT = 30.0  # per wait inside a trial
STOPPING = {"paused": "pausing", "cancelled": "cancelling"}
# (ms from POST until a GET shows the final status, ms of the POST alone,
#  ms between the server's "pausing"/"cancelling" event and its final event)
Sample = tuple[float, float, float | None]


@contextlib.contextmanager
def tether_server(
    home: Path, port: int, workers: int | None, startup_timeout: float
) -> Iterator[str]:
    """Run ``tether serve`` (embedded executor) in its own process group; yield its URL."""
    env = tether_env(TETHER_HOME=str(home), TETHER_EXECUTOR="embedded", TETHER_LOG_LEVEL="WARNING")
    extra = ["--workers", str(workers)] if workers else []
    with _common.tether_server(home, port, env, startup_timeout, extra) as base:
        yield base


class Trials:
    def __init__(self, client: httpx.Client) -> None:
        self.c = client
        self.gets = 0

    def get(self, task_id: int) -> dict[str, Any]:
        self.gets += 1
        task: dict[str, Any] = expect(self.c.get(f"/api/v1/tasks/{task_id}"), 200)
        return task

    def wait(self, task_id: int, ok: Callable[[dict[str, Any]], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_TIMEOUT
        while True:
            task = self.get(task_id)
            if ok(task):
                return
            if (
                task["status"] in ("succeeded", "failed", "cancelled")
                or time.monotonic() > deadline
            ):
                raise RuntimeError(
                    f"task {task_id}: waiting for {what}, got status {task['status']!r}"
                )

    def running_task(self) -> int:
        task_id = int(expect(self.c.post("/api/v1/tasks", json=COUNTDOWN), 201)["id"])
        self.wait(
            task_id,
            lambda t: t["status"] == "running" and t["progress"] is not None,
            "running with progress",
        )
        return task_id

    def control(self, task_id: int, action: str, final: str) -> Sample:
        """POST the action, poll until ``final``; the engine's share comes from the events."""
        t0 = time.perf_counter()
        answer = expect(self.c.post(f"/api/v1/tasks/{task_id}/{action}"), 202)
        t_ack = time.perf_counter()
        if answer["status"] != final:  # the answer itself may already say it
            self.wait(task_id, lambda t: t["status"] == final, final)
        t_end = time.perf_counter()
        return (
            (t_end - t0) * 1000,
            (t_ack - t0) * 1000,
            self.engine_ms(task_id, STOPPING[final], final),
        )

    def engine_ms(self, task_id: int, requested: str, final: str) -> float | None:
        """Server-side time between the request's event and the final event (not timed)."""
        events: list[dict[str, Any]] = expect(self.c.get(f"/api/v1/tasks/{task_id}/events"), 200)
        at = {e["to_status"]: datetime.fromisoformat(e["at"]) for e in events}
        if requested not in at or final not in at:
            return None  # e.g. a queued task paused at once
        return (at[final] - at[requested]).total_seconds() * 1000

    def pause_trial(self) -> Sample:
        task_id = self.running_task()
        result = self.control(task_id, "pause", "paused")
        expect(self.c.post(f"/api/v1/tasks/{task_id}/cancel"), 202)  # do not pile up
        self.wait(task_id, lambda t: t["status"] == "cancelled", "cancelled (cleanup)")
        return result

    def cancel_trial(self) -> Sample:
        return self.control(self.running_task(), "cancel", "cancelled")


def column(rows: list[Sample], i: int) -> list[float]:
    return [x for row in rows if (x := row[i]) is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60, help="trials per action (>= 1)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="embedded worker slots of the server (default: its CPU count)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args()
    trials = max(1, args.trials)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-control-"))
    samples: dict[str, list[Sample]] = {"pause": [], "cancel": []}
    gets = 0
    try:
        with tether_server(tmp / "home", free_port(), args.workers, args.startup_timeout) as base:
            token = login(base)
            headers = {"Authorization": f"Token {token}"}
            with httpx.Client(
                base_url=base, headers=headers, timeout=10, trust_env=False
            ) as client:
                runner = Trials(client)
                runner.pause_trial()  # warm-up, not counted: first requests, imports
                runner.cancel_trial()
                for i in range(trials):
                    samples["pause"].append(runner.pause_trial())
                    samples["cancel"].append(runner.cancel_trial())
                    if (i + 1) % 10 == 0 or i + 1 == trials:
                        log(
                            f"  {i + 1}/{trials} trials: "
                            f"pause {summary(column(samples['pause'], 0))}, "
                            f"cancel {summary(column(samples['cancel'], 0))}"
                        )
                gets = runner.gets
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    p = summary(column(samples["pause"], 0))
    c = summary(column(samples["cancel"], 0))

    def meets(s: dict[str, float | None]) -> bool:
        return (s["p50"] or 0) <= TARGET["p50"] and (s["p99"] or 0) <= TARGET["p99"]

    result = {
        "benchmark": "control_latency",
        "trials": trials,
        "pause_ms": p,
        "cancel_ms": c,
        "pause_post_ms": summary(column(samples["pause"], 1)),
        "cancel_post_ms": summary(column(samples["cancel"], 1)),
        "pause_engine_ms": summary(column(samples["pause"], 2)),
        "cancel_engine_ms": summary(column(samples["cancel"], 2)),
        "target": TARGET,
        "meets_target": meets(p) and meets(c),
        "http_gets": gets,
        "cpu_count": os.cpu_count(),
    }
    log(f"pause ms {p}; cancel ms {c}; target p50 <= {TARGET['p50']:g}, p99 <= {TARGET['p99']:g}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
