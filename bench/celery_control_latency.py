"""Pause and cancel latency over real HTTP with the Celery executor (PostgreSQL + Redis).

Sets up a fresh PostgreSQL database (dropped at the end) and Redis db 10 as broker
(flushed before and after), then runs real subprocesses: ``tether serve`` (API only:
TETHER_BROKER_URL makes the executor ``celery``) and ``--processes`` (default 2)
``tether worker -c 2``. Registers a user and takes a token. Then, per trial:

* pause:  submit ``countdown`` (30 s, tick_ms 1), wait until it is running and has
  progress, then time from just before POST /tasks/{id}/pause until the status is
  ``paused``: in the POST's answer (the API lets the answer wait up to
  TETHER_CONTROL_WAIT_MS, default 100, for the worker to settle it, re-reading the row)
  or else in a GET /tasks/{id} polled back to back on one persistent httpx.Client (one
  GET round trip apart). The paused task is cancelled afterwards.
* cancel: the same with a fresh task, POST /tasks/{id}/cancel until ``cancelled``
  (countdown has no rollback hook).

That observed time is the headline. Diagnostics, from GET /tasks/{id}/events after the
trial (an event's ``at`` is the server's wall clock, this machine's: time.time() here):
``event`` = final event's ``at`` - request sent; ``api`` = the "pausing"/"cancelling"
event's ``at`` - request sent (HTTP, auth, the view up to its status change);
``engine`` = final event - request event; ``post`` = the POST round trip; ``broadcast`` =
request sent -> the ``tether_control`` broadcast seen by a Redis subscriber of this
process on the pidbox fanout channel (the workers' consumers get it at the same moment);
``worker`` = broadcast seen -> final event (the control command in the worker, the
task's next control point, its flush, the status read, the start of the status write);
``visible`` = observed - event (the status write's commit, the API noticing it, its
answer; or the polling slack). An event's ``at`` is taken when its transition starts.
Percentiles use the nearest-rank method (with 60 trials p99 is the slowest trial). The
machine's 1-minute load average before and after is reported: other load skews every
figure. Progress goes to stderr; the last line of stdout is one JSON object. Needs
PostgreSQL and Redis (on 127.0.0.1 by default; BENCH_PG_URL, BENCH_REDIS_URL).

    .venv/bin/python bench/celery_control_latency.py [--trials 60] [--processes 2]
        [--concurrency 2] [--pg postgresql://postgres@127.0.0.1:5432]
        [--redis redis://127.0.0.1:6379/10]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import httpx

from _common import (
    expect,
    free_port,
    log,
    login,
    summary,
    tether_env,
    tether_process,
    tether_server,
)
from control_latency import STOPPING, Trials

TARGET = {"p50_ms": 30.0, "p99_ms": 150.0}
PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
BROKER = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
WARMUP = 4  # uncounted trials per action: first requests, connections, imports


class Unreachable(Exception):
    """PostgreSQL or Redis cannot be reached (a clear message, no traceback)."""


@dataclass
class Sample:
    observed: float  # ms: POST sent -> a GET shows the final status (the headline)
    post: float  # ms: the POST round trip
    event: float | None = None  # ms: POST sent -> the final event's `at`
    api: float | None = None  # ms: POST sent -> the pausing/cancelling event's `at`
    engine: float | None = None  # ms: pausing/cancelling event -> final event
    broadcast: float | None = None  # ms: POST sent -> tether_control seen on Redis
    worker: float | None = None  # ms: tether_control seen -> final event
    visible: float | None = None  # ms: final event -> a GET shows it


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return parts.geturl()


# -- services -----------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database(server: str) -> Iterator[str]:
    """CREATE a uniquely named database on ``server``; yield its URL; DROP it (FORCE)."""
    import psycopg

    admin = f"{server.rstrip('/')}/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise Unreachable(
            f"cannot reach PostgreSQL at {redact(admin)}: {first} "
            "(start it, or point --pg / BENCH_PG_URL at one)"
        ) from None
    name = f"tether_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log(f"database: created {name}")
    try:
        yield f"{server.rstrip('/')}/{name}"
    finally:
        try:
            with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"database: dropped {name}")
        except psycopg.Error as exc:
            log(f"database: could not drop {name}: {exc} (drop it by hand)")


@contextlib.contextmanager
def fresh_redis(url: str) -> Iterator[Any]:
    """Check Redis, flush the broker's db before and after; yield a client."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise Unreachable(
            f"cannot reach Redis at {redact(url)}: {exc} "
            "(start it, or point --redis / BENCH_REDIS_URL at one)"
        ) from None
    client.flushdb()
    try:
        yield client
    finally:
        with contextlib.suppress(redis.RedisError):
            client.flushdb()
        client.close()


class BroadcastMonitor:
    """Subscribes to the Celery pidbox fanout channel, like every worker's consumer, and
    notes when each ``tether_control`` broadcast arrives (time.time())."""

    def __init__(self, client: Any, db: int) -> None:
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(f"/{db}.celery.pidbox*")
        self.seen: dict[tuple[int, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pidbox-monitor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.pubsub.get_message(timeout=0.2)
            except Exception:  # the connection went away: diagnostics only
                return
            if msg is None:
                continue
            at = time.time()
            with contextlib.suppress(Exception):
                envelope = json.loads(msg["data"])
                body = envelope["body"]
                if envelope.get("properties", {}).get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                command = json.loads(body)
                if command.get("method") == "tether_control":
                    arguments = command["arguments"]
                    with self._lock:
                        self.seen.setdefault((int(arguments["task_id"]), arguments["kind"]), at)

    def when(self, task_id: int, kind: str, wait: float = 0.5) -> float | None:
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                at = self.seen.get((task_id, kind))
            if at is not None or time.monotonic() > deadline:
                return at
            time.sleep(0.005)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(Exception):
            self.pubsub.close()


def wait_for_workers(broker: str, count: int, procs: list[Any], timeout: float) -> None:
    """Until ``count`` workers answer a Celery ping (their control consumers are up)."""
    from celery import Celery

    app = Celery("bench-ping", broker=broker, set_as_current=False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"tether worker exited with code {proc.returncode}")
            replies = app.control.ping(timeout=0.5) or []
            if len(replies) >= count:
                names = sorted(name for reply in replies for name in reply)
                log(f"workers: {', '.join(names)} answer pings")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(replies)} of {count} workers up after {timeout:g} s")
    finally:
        app.close()


def start_workers(
    stack: contextlib.ExitStack,
    env: dict[str, str],
    logs: Path,
    processes: int,
    concurrency: int,
    broker: str,
    timeout: float,
) -> list[Any]:
    """Start ``processes`` ``tether worker -c concurrency`` (stopped with ``stack``), logs
    in ``logs``; return them once each answers a ping."""
    procs = [
        stack.enter_context(
            tether_process(
                ["worker", "-c", str(concurrency), "--loglevel", "WARNING"],
                env,
                logs / f"worker{i}.log",
                f"tether worker {i}",
            )
        )
        for i in range(processes)
    ]
    wait_for_workers(broker, processes, procs, timeout)
    return procs


# -- trials -------------------------------------------------------------------------------
class CeleryTrials:
    def __init__(self, client: httpx.Client, monitor: BroadcastMonitor) -> None:
        self.c = client
        self.t = Trials(client)  # get, wait, running_task of the embedded benchmark
        self.monitor = monitor
        self.broadcasts_missed = 0

    def control(self, task_id: int, action: str, final: str) -> Sample:
        sent = time.time()
        t0 = time.perf_counter()
        answer = expect(self.c.post(f"/api/v1/tasks/{task_id}/{action}"), 202)
        t_ack = time.perf_counter()
        if answer["status"] != final:
            self.t.wait(task_id, lambda t: t["status"] == final, final)
        t_end = time.perf_counter()
        sample = Sample(observed=(t_end - t0) * 1000, post=(t_ack - t0) * 1000)
        self.explain(sample, task_id, sent, action, STOPPING[final], final)
        return sample

    def explain(
        self, s: Sample, task_id: int, sent: float, kind: str, requested: str, final: str
    ) -> None:
        """The diagnostics of one trial (not timed)."""
        events: list[dict[str, Any]] = expect(self.c.get(f"/api/v1/tasks/{task_id}/events"), 200)
        at = {e["to_status"]: datetime.fromisoformat(e["at"]).timestamp() for e in events}
        if final in at:
            s.event = (at[final] - sent) * 1000
            s.visible = s.observed - s.event
        if requested in at:
            s.api = (at[requested] - sent) * 1000
            if final in at:
                s.engine = (at[final] - at[requested]) * 1000
        seen = self.monitor.when(task_id, kind)
        if seen is None:
            self.broadcasts_missed += 1
        else:
            s.broadcast = (seen - sent) * 1000
            if final in at:
                s.worker = (at[final] - seen) * 1000

    def pause_trial(self) -> Sample:
        task_id = self.t.running_task()
        result = self.control(task_id, "pause", "paused")
        expect(self.c.post(f"/api/v1/tasks/{task_id}/cancel"), 202)  # do not pile up
        self.t.wait(task_id, lambda t: t["status"] == "cancelled", "cancelled (cleanup)")
        return result

    def cancel_trial(self) -> Sample:
        return self.control(self.t.running_task(), "cancel", "cancelled")


def column(rows: list[Sample], name: str) -> list[float]:
    return [x for row in rows if (x := getattr(row, name)) is not None]


def breakdown(rows: list[Sample]) -> dict[str, dict[str, float | None]]:
    return {f.name: summary(column(rows, f.name)) for f in fields(Sample)}


def brief(rows: list[Sample]) -> str:
    s = summary(column(rows, "observed"))
    return f"p50 {s['p50']} ms, p99 {s['p99']} ms"


# -- main ---------------------------------------------------------------------------------
def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    samples: dict[str, list[Sample]] = {"pause": [], "cancel": []}
    load_before = os.getloadavg()[0]
    if load_before > (os.cpu_count() or 1) / 2:
        log(
            f"note: load average {load_before:.2f} on {os.cpu_count()} CPUs before the "
            "start; the figures will be skewed by it"
        )
    home = tmp / "home"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        redis_client = stack.enter_context(fresh_redis(args.redis))
        database = stack.enter_context(fresh_database(args.pg))
        env = tether_env(
            TETHER_HOME=str(home),
            TETHER_DATABASE_URL=database,
            TETHER_BROKER_URL=args.redis,
            TETHER_LOG_LEVEL="WARNING",
            TETHER_SECRET_KEY="bench-" + uuid.uuid4().hex,
        )
        base = stack.enter_context(tether_server(home, free_port(), env, args.startup_timeout))
        procs = start_workers(
            stack, env, tmp, args.processes, args.concurrency, args.redis, args.startup_timeout
        )
        monitor = BroadcastMonitor(redis_client, int(urlsplit(args.redis).path.strip("/") or 0))
        stack.callback(monitor.close)
        token = login(base)
        client = stack.enter_context(
            httpx.Client(
                base_url=base,
                headers={"Authorization": f"Token {token}"},
                timeout=10,
                trust_env=False,
            )
        )
        runner = CeleryTrials(client, monitor)
        for _ in range(WARMUP):
            runner.pause_trial()
            runner.cancel_trial()
        runner.broadcasts_missed = 0
        for i in range(args.trials):
            samples["pause"].append(runner.pause_trial())
            samples["cancel"].append(runner.cancel_trial())
            if (i + 1) % 10 == 0 or i + 1 == args.trials:
                log(
                    f"  {i + 1}/{args.trials} trials: pause {brief(samples['pause'])}; "
                    f"cancel {brief(samples['cancel'])}"
                )
        gets, missed = runner.t.gets, runner.broadcasts_missed
        load_after = os.getloadavg()[0]
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                raise RuntimeError(f"tether worker {i} exited with code {proc.returncode}")

    pause = summary(column(samples["pause"], "observed"))
    cancel = summary(column(samples["cancel"], "observed"))
    pause_event = summary(column(samples["pause"], "event"))
    cancel_event = summary(column(samples["cancel"], "event"))

    def meets(s: dict[str, float | None]) -> bool:
        return (s["p50"] or 0) <= TARGET["p50_ms"] and (s["p99"] or 0) <= TARGET["p99_ms"]

    return {
        "benchmark": "celery_control_latency",
        "trials": args.trials,
        "pause_p50_ms": pause["p50"],
        "pause_p99_ms": pause["p99"],
        "cancel_p50_ms": cancel["p50"],
        "cancel_p99_ms": cancel["p99"],
        "target": TARGET,
        "meets_target": meets(pause) and meets(cancel),
        "database": "postgresql",
        "broker": "redis",
        "cpu_count": os.cpu_count(),
        "processes": args.processes,
        "concurrency": args.concurrency,
        "pause_event_p50_ms": pause_event["p50"],
        "pause_event_p99_ms": pause_event["p99"],
        "cancel_event_p50_ms": cancel_event["p50"],
        "cancel_event_p99_ms": cancel_event["p99"],
        "pause_breakdown_ms": breakdown(samples["pause"]),
        "cancel_breakdown_ms": breakdown(samples["cancel"]),
        "broadcasts_missed": missed,
        "http_gets": gets,
        # other load on the machine skews every figure: the 1-minute load average
        "loadavg_1m": [round(load_before, 2), round(load_after, 2)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60, help="trials per action (>= 1)")
    parser.add_argument("--processes", type=int, default=2, help="tether worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="threads per worker")
    parser.add_argument(
        "--pg",
        default=PG,
        help="PostgreSQL server URL, no database (default $BENCH_PG_URL or %(default)s)",
    )
    parser.add_argument(
        "--redis",
        default=BROKER,
        help="Redis broker URL with its db, "
        "flushed before and after (default $BENCH_REDIS_URL or "
        "%(default)s)",
    )
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    args = parser.parse_args()
    args.trials = max(1, args.trials)
    args.processes = max(1, args.processes)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # SIGTERM too: unwind, so everything is torn down

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-celery-control-"))
    try:
        result = run(args, tmp)
    except Unreachable as exc:
        log(f"celery_control_latency: {exc}")
        return 2
    except KeyboardInterrupt:
        log("celery_control_latency: interrupted; everything torn down")
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(
        f"pause ms p50 {result['pause_p50_ms']}, p99 {result['pause_p99_ms']}; "
        f"cancel ms p50 {result['cancel_p50_ms']}, p99 {result['cancel_p99_ms']}; "
        f"target p50 <= {TARGET['p50_ms']:g}, p99 <= {TARGET['p99_ms']:g}; "
        f"load average {result['loadavg_1m']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
