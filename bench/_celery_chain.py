"""Plain Celery chain for bench/pipelines.py (not a benchmark by itself).

The app of ``_celery_noop`` (Redis, JSON, no result backend) with the delivery settings
of ``tether worker`` (late acks, one message prefetched), so that the only difference
from a Tether pipeline is what happens between two steps. Each link notes its start
minus the previous link's end (``time.time()``, one machine's clock) on a Redis list
before it returns; the next link gets that return value as its first argument.

The worker imports this module by name (``celery -A _celery_chain worker``).
"""

from __future__ import annotations

import time
from typing import Any

from _celery_noop import _client, app

app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)


@app.task(name="bench_chain_step")
def chain_step(prev: dict[str, float] | None, key: str) -> dict[str, float]:
    """Do nothing; note the gap since the link before (the first link has none)."""
    start = time.time()
    if prev is not None:
        _client().rpush(key, start - prev["end"])
    return {"start": start, "end": time.time()}


def signatures(key: str, links: int) -> list[Any]:
    """The links of one chain whose gaps go to the Redis list ``key``."""
    return [chain_step.s(None, key=key)] + [chain_step.s(key=key) for _ in range(links - 1)]
