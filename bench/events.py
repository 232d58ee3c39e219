"""The event stream's figures, in one run, against real ``tether serve`` processes.

1. ``latency_embedded``: commit → client latency of status events. A WebSocket client
   of ``tether serve`` (embedded executor, SQLite) subscribes to its user's tasks while
   ``--tasks`` ``add`` tasks are submitted over REST, paced; for every status event,
   the time it arrived minus its ``at`` (taken when the transition starts, before its
   commit: so commit time is included). One machine, one clock.
2. ``latency_celery``: the same with the Celery executor on PostgreSQL + Redis and two
   ``tether worker`` processes; the figure is for the events committed in the workers
   (running, succeeded), which reach the server over the broker's fanout exchange.
3. ``pause_ws``: a ``pause`` sent over the WebSocket → the ``paused`` event received
   (embedded; a countdown that is running and reporting progress).
4. ``fanout``: ``--clients`` WebSocket clients (one separate process) subscribed to one
   user's ``--running`` countdowns (each reports progress 5 times a second); frames
   delivered per second and the p99 of their latency (now - at). Side by side, a plain
   ``websockets`` server broadcasting frames of the same shape at the same rate to as
   many clients (bench/_plain_ws_server.py): the floor for Python on this machine.

Progress goes to stderr; the last line of stdout is one JSON object. The Celery part
needs PostgreSQL and Redis (BENCH_PG_URL, BENCH_REDIS_URL; --no-celery skips it).

    .venv/bin/python bench/events.py [--tasks 300] [--trials 40] [--clients 1000]
        [--running 100] [--seconds 10] [--no-celery]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

import _common
from _common import HOST, expect, free_port, log, login, summary, tether_env
from celery_control_latency import Unreachable, fresh_database, fresh_redis, start_workers

BENCH = Path(__file__).resolve().parent
TARGETS = {
    "latency_embedded_p99_ms": 50.0,
    "latency_celery_p99_ms": 100.0,
    "fanout_p99_ms": 250.0,
    "fanout_ratio": 0.5,
    "pause_ws_p50_ms": 10.0,
}


def unix(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


class Stream:
    """One WebSocket client: a reader thread notes each frame with its arrival time."""

    def __init__(self, base: str, token: str) -> None:
        url = base.replace("http://", "ws://") + "/ws/v1"
        self.ws: ClientConnection = connect(
            url, additional_headers={"Authorization": f"Token {token}"}, max_size=2**21
        )
        self.frames: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self._req = 0
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):
            for raw in self.ws:
                self.frames.put((time.time(), json.loads(raw)))

    def request(self, kind: str, **fields: Any) -> int:
        self._req += 1
        self.ws.send(json.dumps({"type": kind, "req": self._req, **fields}))
        return self._req

    def next(self, timeout: float = 30.0) -> tuple[float, dict[str, Any]]:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no frame for {timeout:g} s") from None

    def reply(self, req: int) -> Any:
        while True:
            _, msg = self.next()
            if msg.get("type") == "reply" and msg.get("req") == req:
                if not msg["ok"]:
                    raise RuntimeError(f"request refused: {msg['error']}")
                return msg["data"]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self._thread.join(5)


@contextlib.contextmanager
def server(tmp: Path, name: str, slots: int, **settings: str) -> Iterator[str]:
    home = tmp / name
    home.mkdir()
    env = tether_env(TETHER_HOME=str(home), TETHER_LOG_LEVEL="WARNING", **settings)
    with _common.tether_server(home, free_port(), env, 60.0, ["--workers", str(slots)]) as base:
        yield base


def status_latency(base: str, token: str, tasks: int, wanted: set[str]) -> list[float]:
    """Submit ``tasks`` add tasks, paced; the latency (ms) of their status events."""
    stream = Stream(base, token)
    try:
        stream.reply(stream.request("subscribe", tasks="mine"))
        submitted: set[int] = set()
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Token {token}"}, trust_env=False
        ) as c:
            for i in range(tasks):
                task = expect(
                    c.post(
                        "/api/v1/tasks",
                        json={"type": "add", "params": {"operand1": i, "operand2": 1}},
                    ),
                    201,
                )
                submitted.add(task["id"])
                time.sleep(0.02)  # paced submissions: latency, not throughput (not a sync)
        samples: list[float] = []
        done: set[int] = set()
        while done != submitted:
            arrived, msg = stream.next()
            if msg.get("type") != "event" or msg["kind"] != "status":
                continue
            if msg["to"] in wanted:
                samples.append((arrived - unix(msg["at"])) * 1000)
            if msg["to"] == "succeeded":
                done.add(msg["task"])
        return samples
    finally:
        stream.close()


def pause_over_websocket(base: str, token: str, trials: int) -> list[float]:
    stream = Stream(base, token)
    samples: list[float] = []
    try:
        stream.reply(stream.request("subscribe", tasks="mine"))
        for _ in range(trials + 3):
            params = {"seconds": 30, "tick_ms": 1}
            task = stream.reply(stream.request("submit", task_type="countdown", params=params))
            while True:  # until it reports progress: it is running its loop
                _, msg = stream.next()
                if msg.get("kind") == "progress" and msg["task"] == task["id"]:
                    break
            began = time.time()
            stream.request("pause", task=task["id"])
            while True:
                arrived, msg = stream.next()
                if msg.get("kind") == "status" and (msg["task"], msg["to"]) == (
                    task["id"],
                    "paused",
                ):
                    samples.append((arrived - began) * 1000)
                    break
            stream.request("cancel", task=task["id"])
        return samples[3:]  # the first trials warm the server up
    finally:
        stream.close()


@contextlib.contextmanager
def child(args: list[str], name: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        yield proc
    finally:
        _common.stop_process_group(proc, name, grace=5)  # type: ignore[arg-type]


def client_command(url: str, token: str | None, clients: int, seconds: float) -> list[str]:
    args = [sys.executable, str(BENCH / "_ws_clients.py"), "--url", url]
    args += ["--clients", str(clients), "--seconds", str(seconds), "--wait-for-go"]
    return args + (["--token", token] if token else [])


@contextlib.contextmanager
def clients_ready(
    url: str, token: str | None, clients: int, seconds: float
) -> Iterator[subprocess.Popen[str]]:
    """The clients process, once every client is connected (and subscribed)."""
    proc = subprocess.Popen(
        client_command(url, token, clients, seconds),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the WebSocket clients failed: {proc.communicate()[1][-2000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def counted(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Tell the clients to start counting; their figures."""
    out, err = proc.communicate("go\n", timeout=300)
    if proc.returncode:
        raise RuntimeError(f"the WebSocket clients failed: {err.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    ms = [float(k) for k, n in result.pop("histogram").items() for _ in range(n)]
    result["latency_ms"] = summary(ms)
    result["per_second"] = round(result["deliveries"] / result["seconds"])
    return result


def fanout(base: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    url = base.replace("http://", "ws://") + "/ws/v1"
    log(f"fan-out: {args.clients} clients connecting")
    with (
        clients_ready(url, token, args.clients, args.seconds) as clients,
        httpx.Client(  # the server is busy sending to every client: be patient
            base_url=base,
            headers={"Authorization": f"Token {token}"},
            trust_env=False,
            timeout=120,
        ) as c,
    ):
        tick_ms = max(50, round(args.progress_every * 1000))  # figures saved 5 a second at most
        body = {"type": "countdown", "params": {"seconds": 600, "tick_ms": tick_ms}}
        ids = [expect(c.post("/api/v1/tasks", json=body), 201)["id"] for _ in range(args.running)]
        deadline = time.monotonic() + 120
        while True:
            running = expect(c.get("/api/v1/tasks", params={"status": "running"}), 200)["count"]
            if running >= args.running:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{running} of {args.running} countdowns running after 120 s")
            time.sleep(0.1)
        log(f"fan-out: {args.running} countdowns running; counting")
        tether = counted(clients)
        for task_id in ids:
            c.post(f"/api/v1/tasks/{task_id}/cancel", json={})
    port = free_port()
    rate = str(min(5.0, 1 / args.progress_every))
    plain_args = [str(BENCH / "_plain_ws_server.py"), "--port", str(port)]
    plain_args += ["--tasks", str(args.running), "--rate", rate, "--start-at", str(args.clients)]
    with child(plain_args, "plain websockets server") as proc:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the plain websockets server did not start")
        with clients_ready(f"ws://{HOST}:{port}/", None, args.clients, args.seconds) as clients:
            plain = counted(clients)
    ratio = tether["per_second"] / plain["per_second"] if plain["per_second"] else None
    return {"tether": tether, "plain": plain, "ratio": round(ratio, 3) if ratio else None}


def celery_latency(tmp: Path, args: argparse.Namespace) -> list[float]:
    home = tmp / "celery"
    home.mkdir()
    with contextlib.ExitStack() as stack:
        stack.enter_context(fresh_redis(args.redis))
        database = stack.enter_context(fresh_database(args.pg))
        env = tether_env(
            TETHER_HOME=str(home),
            TETHER_DATABASE_URL=database,
            TETHER_BROKER_URL=args.redis,
            TETHER_LOG_LEVEL="WARNING",
            TETHER_SECRET_KEY="bench-" + uuid.uuid4().hex,
        )
        base = stack.enter_context(_common.tether_server(home, free_port(), env, 60.0))
        start_workers(stack, env, tmp, 2, 2, args.redis, 60.0)
        token = login(base)
        status_latency(base, token, 20, set())  # warm-up
        return status_latency(base, token, args.tasks, {"running", "succeeded"})


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"load_before": round(os.getloadavg()[0], 2)}
    per_user = str(args.clients + 10)
    slots = args.running + 4  # every countdown of the fan-out runs at once
    with server(tmp, "embedded", slots, TETHER_STREAMS_PER_USER=per_user) as base:
        token = login(base)
        parts = args.parts.split(",")
        if "latency" in parts:
            status_latency(base, token, 20, set())  # warm-up
            lat = status_latency(base, token, args.tasks, {"queued", "running", "succeeded"})
            figures["latency_embedded_ms"] = summary(lat)
            log(f"latency, embedded: {figures['latency_embedded_ms']}")
        if "pause" in parts:
            figures["pause_ws_ms"] = summary(pause_over_websocket(base, token, args.trials))
            log(f"pause over the WebSocket → paused event: {figures['pause_ws_ms']}")
        if "fanout" in parts:
            figures["fanout"] = fanout(base, token, args)
            log(f"fan-out: {json.dumps(figures['fanout'])}")
    if args.celery:
        try:
            figures["latency_celery_ms"] = summary(celery_latency(tmp, args))
            log(f"latency, Celery (worker commits): {figures['latency_celery_ms']}")
        except Unreachable as exc:
            log(f"Celery part skipped: {exc}")
            figures["latency_celery_ms"] = None
    figures["load_after"] = round(os.getloadavg()[0], 2)
    figures["targets"] = TARGETS

    def at_most(figure: dict[str, Any] | None, key: str, target: float) -> bool | None:
        value = (figure or {}).get(key)
        return None if value is None else value <= target

    fan = figures.get("fanout") or {}
    figures["meets"] = {
        "latency_embedded": at_most(
            figures.get("latency_embedded_ms"), "p99", TARGETS["latency_embedded_p99_ms"]
        ),
        "latency_celery": at_most(
            figures.get("latency_celery_ms"), "p99", TARGETS["latency_celery_p99_ms"]
        ),
        "fanout_p99": at_most(
            (fan.get("tether") or {}).get("latency_ms"), "p99", TARGETS["fanout_p99_ms"]
        ),
        "fanout_ratio": None if not fan else (fan["ratio"] or 0) >= TARGETS["fanout_ratio"],
        "pause_ws": at_most(figures.get("pause_ws_ms"), "p50", TARGETS["pause_ws_p50_ms"]),
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--progress-every",
        type=float,
        default=0.2,
        help="seconds between a running countdown's progress updates (0.2: 5 a second)",
    )
    parser.add_argument("--no-celery", dest="celery", action="store_false")
    parser.add_argument(
        "--parts", default="latency,pause,fanout", help="which embedded parts to run"
    )
    parser.add_argument(
        "--pg", default=os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument(
        "--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-events-"))
    try:
        figures = run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
