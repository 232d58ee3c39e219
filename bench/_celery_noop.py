"""Plain Celery baseline for bench/throughput.py (not a benchmark by itself).

A Celery app on Redis with JSON only, no result backend and ``task_ignore_result``.
The no-op task INCRs a Redis counter: without a result backend that is the cheapest way
for the benchmark to learn that a task has finished (one Redis round trip per task).

The worker imports this module by name (``celery -A _celery_noop worker``), so
throughput.py puts ``bench/`` on the worker's PYTHONPATH.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
COUNTER_KEY = "bench:celery_noop:done"

# fixups=[]: no Django fix-up, even when DJANGO_SETTINGS_MODULE is set in the environment.
app = Celery("bench_celery_noop", broker=BROKER_URL, fixups=[])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:  # one connection per worker process, made after the fork
        _redis = redis.Redis.from_url(BROKER_URL)
    return _redis


@app.task(name="bench_noop")
def noop(**_: Any) -> None:
    """Do nothing, then count one finished task (the minimal cost of observing it)."""
    _client().incr(COUNTER_KEY)
