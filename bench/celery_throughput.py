"""Throughput of the Celery executor vs plain Celery, same broker and worker count.

Tether side: a fresh PostgreSQL database, Redis db 11 as broker, one ``tether worker -c 2``
subprocess (thread pool), a ``bench_noop`` task type. Timed in this process:
``service.submit_many(user, "bench_noop", [{}] * N)`` (which publishes one message per
task after commit) plus waiting until all N have succeeded, each with its full history
(queued -> running -> succeeded). Plain Celery side: ``throughput.run_celery`` (Redis,
2 prefork processes, no result backend). Target ratio >= 1.0 (we store full history,
they store nothing). Needs PostgreSQL and Redis on 127.0.0.1.

    .venv/bin/python bench/celery_throughput.py [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import log, stop_process_group

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PG = "postgresql://postgres@127.0.0.1:5432"
BROKER = "redis://127.0.0.1:6379/11"
TASKS_MODULE = (
    "from tether import task\n\n\n@task(name='bench_noop')\ndef noop(ctx):\n    return None\n"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    import psycopg
    import redis

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-celery-"))
    db = f"tether_bench_{uuid.uuid4().hex[:8]}"
    (tmp / "bench_noop_tasks.py").write_text(TASKS_MODULE)
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    redis.Redis.from_url(BROKER).flushdb()
    env = {
        "TETHER_HOME": str(tmp / "home"),
        "TETHER_DATABASE_URL": f"{PG}/{db}",
        "TETHER_BROKER_URL": BROKER,
        "TETHER_TASK_MODULES": "bench_noop_tasks",
        "DJANGO_SETTINGS_MODULE": "tether.server.settings",
        "TETHER_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(tmp))
    worker = None
    try:
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from django.core.management import call_command

        from tether import service
        from tether.executors.celery_executor import CeleryExecutor
        from tether.models import Task, TaskEvent

        call_command("migrate", interactive=False, verbosity=0)
        user = get_user_model().objects.create_user("bench")
        wlog = tmp / "worker.log"
        with open(wlog, "wb") as out:
            worker = subprocess.Popen(
                [
                    str(REPO / ".venv" / "bin" / "tether"),
                    "worker",
                    "-c",
                    str(args.concurrency),
                    "--loglevel",
                    "WARNING",
                ],
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(REPO)])},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        executor = CeleryExecutor()
        executor.start()
        warm = service.submit_many(user, "bench_noop", [{}] * 20)
        deadline = time.monotonic() + 60
        while Task.objects.filter(id__in=[t.pk for t in warm], status="succeeded").count() < 20:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError("worker not working:\n" + wlog.read_text()[-2000:])
            time.sleep(0.05)
        log(f"tether celery: submit {args.n} tasks and run them")
        t0 = time.perf_counter()
        tasks = service.submit_many(user, "bench_noop", [{}] * args.n)
        ids = [t.pk for t in tasks]
        deadline = time.monotonic() + args.timeout
        while Task.objects.filter(id__in=ids, status="succeeded").count() < args.n:
            if time.monotonic() > deadline:
                raise RuntimeError("timed out")
            time.sleep(0.02)
        total = time.perf_counter() - t0
        events = TaskEvent.objects.filter(task_id__in=ids).count()
        tether_rate = args.n / total
        log(f"tether celery: {tether_rate:.0f} tasks/s")
        executor.stop()
    finally:
        if worker is not None:
            stop_process_group(worker, "tether worker")
        from django.db import connections

        connections.close_all()
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        redis.Redis.from_url(BROKER).flushdb()

    sys.path.insert(0, str(BENCH_DIR))
    from throughput import run_celery

    try:
        plain = run_celery(args.n, 50, args.concurrency, args.timeout, tmp, 6379)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratio = tether_rate / plain["tasks_per_s"]
    print(
        json.dumps(
            {
                "benchmark": "celery_throughput",
                "n": args.n,
                "concurrency": args.concurrency,
                "tether_celery_tasks_per_s": round(tether_rate, 1),
                "plain_celery_tasks_per_s": round(plain["tasks_per_s"], 1),
                "ratio": round(ratio, 2),
                "target_ratio": 1.0,
                "meets_target": ratio >= 1.0,
                "history_complete": events == 3 * args.n,
                "database": "postgresql",
                "broker": "redis",
                "cpu_count": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
