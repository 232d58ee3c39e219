"""Throughput of no-op tasks: Tether's embedded executor vs plain Celery, in one run.

Embedded (in this process): a fresh SQLite database in a temporary TETHER_HOME, a
``bench_noop`` task type, ``EmbeddedExecutor(workers=os.cpu_count())``. Timed:
``service.submit_many(user, "bench_noop", [{}] * N)`` plus waiting (polling the
succeeded count every ~20 ms) until all N tasks have succeeded. Every task then must
have its full status history, 3 TaskEvent rows: None->queued, queued->running,
running->succeeded (``history_complete``). A second figure submits ``--n-single``
tasks one at a time with ``service.submit``.

Plain Celery (a worker subprocess): broker redis://127.0.0.1:6379/15 (flushed first),
JSON only, ``task_ignore_result=True``, no result backend, ``celery -A _celery_noop
worker -c 2 -P prefork --without-gossip --without-mingle --without-heartbeat``. As there
is no result backend, the no-op task INCRs a Redis counter: one Redis round trip per task
is the minimal cost of observing completion at all. Timed: N ``delay()`` calls plus
waiting (polling every ~20 ms) until the counter reaches N.

Both sides first run ``--warmup`` tasks that are not timed. If Redis is unreachable the
Celery fields are null. Progress goes to stderr; the last line of stdout is one JSON
object with ``ratio`` = embedded tasks/s / Celery tasks/s (target >= 3).

    .venv/bin/python bench/throughput.py [--n 5000] [--n-single 1000] [--skip-celery]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import log, stop_process_group

BENCH_DIR = Path(__file__).resolve().parent
REDIS_URL = "redis://127.0.0.1:{port}/15"  # db 15 is flushed before and after
TARGET_RATIO = 3.0
POLL = 0.02
EXPECTED_HISTORY = [(None, "queued"), ("queued", "running"), ("running", "succeeded")]


def wait_for(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``done`` every POLL seconds until it is true; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


# -- embedded ----------------------------------------------------------------------------
def setup_django(home: Path) -> None:
    """Point Tether at a fresh SQLite database in ``home`` and create its tables."""
    os.environ["TETHER_HOME"] = str(home)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tether.server.settings"
    for name in ("TETHER_DATABASE_URL", "TETHER_TASK_MODULES", "TETHER_APPS"):
        os.environ.pop(name, None)  # never touch a configured database
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def check_history(first_id: int, last_id: int) -> dict[str, Any]:
    """Compare each task's events in [first_id, last_id] with queued->running->succeeded."""
    from tether.models import TaskEvent

    rows = (
        TaskEvent.objects.filter(task_id__gte=first_id, task_id__lte=last_id)
        .order_by("task_id", "id")
        .values_list("task_id", "from_status", "to_status")
    )
    history: dict[int, list[tuple[str | None, str]]] = {}
    for task_id, src, dst in rows:
        history.setdefault(task_id, []).append((src, dst))
    expected_tasks = last_id - first_id + 1
    bad = sum(1 for h in history.values() if h != EXPECTED_HISTORY)
    bad += expected_tasks - len(history)
    return {
        "tasks": expected_tasks,
        "events": sum(len(h) for h in history.values()),
        "tasks_with_bad_history": bad,
        "complete": bad == 0,
    }


def run_embedded(
    n: int, n_single: int, warmup: int, workers: int, timeout: float
) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count

    from tether import service, task
    from tether.executors.embedded import EmbeddedExecutor
    from tether.models import Task

    @task(name="bench_noop")
    def noop(ctx: Any) -> None:
        return None

    user = get_user_model().objects.create_user("bench", password=None)
    succeeded = Task.objects.filter(status="succeeded")

    def wait_succeeded(target: int, what: str) -> None:
        try:
            wait_for(lambda: succeeded.count() >= target, timeout, what)
        except TimeoutError:
            counts = dict(Task.objects.order_by().values_list("status").annotate(n=Count("id")))
            log(f"embedded: status counts at timeout: {counts}")
            raise

    executor = EmbeddedExecutor(workers=workers)
    executor.start()
    log(f"embedded: executor started with {executor.slots} worker slot(s)")
    try:
        if warmup:
            service.submit_many(user, "bench_noop", [{}] * warmup)
            wait_succeeded(warmup, "the warm-up tasks")
        base = succeeded.count()

        log(f"embedded: submit_many {n} tasks and run them")
        t0 = time.perf_counter()
        tasks = service.submit_many(user, "bench_noop", [{}] * n)
        t_submit = time.perf_counter() - t0
        wait_succeeded(base + n, f"{n} bulk-submitted tasks")
        t_total = time.perf_counter() - t0
        history = check_history(tasks[0].pk, tasks[-1].pk)
        log(
            f"embedded: bulk {n / t_total:.0f} tasks/s (submit {t_submit:.3f} s, total "
            f"{t_total:.3f} s); history {history}"
        )

        single: dict[str, Any] = {"tasks_per_s": None, "total_s": None, "history": None}
        if n_single:
            base = succeeded.count()
            log(f"embedded: submit {n_single} tasks one at a time and run them")
            t0 = time.perf_counter()
            first = service.submit(user, "bench_noop", {})
            for _ in range(n_single - 1):
                last = service.submit(user, "bench_noop", {})
            wait_succeeded(base + n_single, f"{n_single} singly submitted tasks")
            t_single = time.perf_counter() - t0
            last_id = first.pk if n_single == 1 else last.pk
            single = {
                "tasks_per_s": n_single / t_single,
                "total_s": t_single,
                "history": check_history(first.pk, last_id),
            }
            log(
                f"embedded: single {n_single / t_single:.0f} tasks/s ({t_single:.3f} s); "
                f"history {single['history']}"
            )
    finally:
        executor.stop(timeout=10)
        connection.close()
    return {
        "tasks_per_s": n / t_total,
        "submit_s": t_submit,
        "total_s": t_total,
        "history": history,
        "single": single,
        "slots": executor.slots,
    }


# -- plain Celery ------------------------------------------------------------------------
@contextlib.contextmanager
def celery_worker(
    concurrency: int,
    workdir: Path,
    broker: str,
    *,
    app: str = "_celery_noop",
    pool: str = "prefork",
    name: str = "celery-worker",
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a Celery worker subprocess (own process group) and stop it afterwards.
    ``app``: a bench/_celery_*.py module; ``name``: its node name and log file."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "TETHER_HOME")
    }
    # only the app module on the worker's path, not the bench scripts
    appdir = workdir / "celery-app"
    appdir.mkdir(exist_ok=True)
    for module in BENCH_DIR.glob("_celery_*.py"):
        shutil.copy(module, appdir / module.name)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(appdir), env.get("PYTHONPATH", "")]))
    env["BENCH_CELERY_BROKER"] = broker
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-n",
        f"{name}@%h",
        "-c",
        str(concurrency),
        "-P",
        pool,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_process_group(proc, name)
        tail = log_path.read_text(errors="replace").strip().splitlines()[-10:]
        if tail:
            log(f"{name} log (last lines):\n  " + "\n  ".join(tail))


def run_celery(
    n: int, warmup: int, concurrency: int, timeout: float, workdir: Path, redis_port: int
) -> dict[str, Any]:
    import redis

    broker = REDIS_URL.format(port=redis_port)
    r = redis.Redis.from_url(broker, socket_connect_timeout=2, socket_timeout=10)
    try:
        r.ping()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis at {broker} is not reachable ({exc})") from exc
    r.flushdb()
    os.environ["BENCH_CELERY_BROKER"] = broker  # read when _celery_noop is imported
    sys.path.insert(0, str(BENCH_DIR))
    import _celery_noop as cn

    def counter() -> int:
        return int(r.get(cn.COUNTER_KEY) or 0)

    try:
        with celery_worker(concurrency, workdir, broker) as proc:
            deadline = time.monotonic() + 60
            while not cn.app.control.ping(timeout=1):
                if proc.poll() is not None:
                    raise RuntimeError(f"celery worker exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise RuntimeError("celery worker did not answer ping within 60 s")
            log(f"celery: worker ready (-c {concurrency} prefork)")
            if warmup:
                for _ in range(warmup):
                    cn.noop.delay()
                wait_for(lambda: counter() >= warmup, timeout, "the Celery warm-up tasks")
            r.delete(cn.COUNTER_KEY)

            log(f"celery: publish {n} delay() calls and run them")
            t0 = time.perf_counter()
            for _ in range(n):
                cn.noop.delay()
            t_publish = time.perf_counter() - t0
            wait_for(lambda: counter() >= n, timeout, f"{n} Celery tasks")
            t_total = time.perf_counter() - t0
            log(
                f"celery: {n / t_total:.0f} tasks/s (publish {t_publish:.3f} s, total "
                f"{t_total:.3f} s)"
            )
    finally:
        with contextlib.suppress(redis.RedisError):
            r.flushdb()
        r.close()
    return {"tasks_per_s": n / t_total, "publish_s": t_publish, "total_s": t_total}


# -- main --------------------------------------------------------------------------------
def rounded(x: float | None, digits: int = 1) -> float | None:
    return None if x is None else round(x, digits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="tasks per side (default 5000)")
    parser.add_argument(
        "--n-single",
        type=int,
        default=1000,
        help="tasks submitted one at a time with service.submit (0: skip)",
    )
    parser.add_argument("--warmup", type=int, default=50, help="untimed tasks per side first")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="embedded worker slots (default: CPU count)",
    )
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for each phase to finish"
    )
    parser.add_argument(
        "--redis-port",
        type=int,
        default=6379,
        help="Redis on 127.0.0.1 used as the Celery broker (db 15)",
    )
    parser.add_argument("--skip-celery", action="store_true")
    args = parser.parse_args()
    n = max(1, args.n)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-throughput-"))
    embedded: dict[str, Any] | None = None
    celery: dict[str, Any] | None = None
    celery_error: str | None = None
    try:
        setup_django(tmp / "home")
        embedded = run_embedded(
            n, max(0, args.n_single), max(0, args.warmup), args.workers, args.timeout
        )
        if args.skip_celery:
            celery_error = "skipped (--skip-celery)"
        else:
            try:
                celery = run_celery(
                    n,
                    max(0, args.warmup),
                    args.celery_concurrency,
                    args.timeout,
                    tmp,
                    args.redis_port,
                )
            except Exception as exc:
                celery_error = f"{type(exc).__name__}: {exc}"
                log(f"celery: NOT MEASURED: {celery_error}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    emb_rate = embedded["tasks_per_s"]
    cel_rate = celery["tasks_per_s"] if celery else None
    ratio = emb_rate / cel_rate if cel_rate else None
    single = embedded["single"]
    result = {
        "benchmark": "throughput",
        "n": n,
        "embedded_tasks_per_s": rounded(emb_rate),
        "embedded_submit_s": rounded(embedded["submit_s"], 3),
        "embedded_total_s": rounded(embedded["total_s"], 3),
        "embedded_workers": embedded["slots"],
        "embedded_single_n": args.n_single if single["tasks_per_s"] else 0,
        "embedded_single_tasks_per_s": rounded(single["tasks_per_s"]),
        "celery_tasks_per_s": rounded(cel_rate),
        "celery_publish_s": rounded(celery["publish_s"], 3) if celery else None,
        "celery_total_s": rounded(celery["total_s"], 3) if celery else None,
        "celery_concurrency": args.celery_concurrency,
        "celery_error": celery_error,
        "ratio": rounded(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": None if ratio is None else ratio >= TARGET_RATIO,
        "history_complete": embedded["history"]["complete"],
        "history_events": embedded["history"]["events"],
        "single_history_complete": (single["history"]["complete"] if single["history"] else None),
        "warmup": args.warmup,
        "cpu_count": os.cpu_count(),
    }
    if ratio is not None:
        log(f"ratio embedded/celery = {ratio:.2f} (target >= {TARGET_RATIO:g})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
