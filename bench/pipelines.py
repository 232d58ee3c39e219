"""Pipeline hand-off latency, step N ``succeeded`` -> step N+1 ``running``: the embedded
executor (SQLite) and the Celery executor (PostgreSQL + Redis), beside a plain Celery
``chain`` of the same no-op steps, in one run.

Tether: ``--pipelines`` pipelines of ``--orders`` orders, one no-op step per order
(``bench_step``, bench/_pipeline_steps.py), created in-process with
``tether.pipelines.control.create`` one after the other (each runs alone). The
hand-off is read from the database's own records: the ``at`` of the ``running`` event
of an order's step minus that of the last ``succeeded`` event of the order before (an
event's ``at`` is taken when its transition starts, so the success's commit, with the
step hook that queues the next step, is inside it). Also from the stored results:
``step_gap`` = a step function's start minus the previous step's return
(``time.time()``, one machine's clock) — what a chain measures — and a breakdown:
``return_to_succeeded`` (the group commit of successes), ``succeeded_to_queued`` (the
hook in the success's transaction), ``queued_to_published`` (Celery: commit and
after-commit publisher), ``queued_to_running`` (commit, dispatch, claim). A parallel
variant (``--width`` steps per order, ``--parallel-pipelines``; 0 skips it) is reported
apart: each step of an order minus the last success of the order before.

* embedded: a child process; a fresh SQLite TETHER_HOME; ``EmbeddedExecutor`` in it.
* celery: a child process; a fresh PostgreSQL database (dropped at the end), Redis
  ``--redis`` (flushed before and after) as broker; ``--processes`` ``tether worker -c
  --concurrency`` subprocesses loading the step with TETHER_TASK_MODULES; the Celery
  executor's publisher installed in the child (it publishes the first steps; the
  workers publish the next ones after their commits).
* chain: ``celery.chain`` of ``--orders`` links (bench/_celery_chain.py: Redis
  ``--chain-redis``, no result backend, late acks, prefetch 1), ``--processes`` plain
  Celery workers with a thread pool of ``--concurrency``, ``--pipelines`` chains one
  after the other; each link's start minus the previous link's return.

Percentiles are nearest-rank. Progress goes to stderr; the last line of stdout is one
JSON object. Targets: embedded hand-off p50 <= 20 ms, Celery p50 <= 50 ms, and Celery's
step gap p50 no more than the chain's. ``--quick``: fewer pipelines. The Celery parts
need PostgreSQL and Redis (BENCH_PG_URL, BENCH_REDIS_URL; ``--no-celery`` skips them).

    .venv/bin/python bench/pipelines.py [--pipelines 30] [--orders 10] [--width 2]
        [--parallel-pipelines 12] [--processes 2] [--concurrency 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import log, percentile, summary, tether_env
from celery_control_latency import (
    Unreachable,
    fresh_database,
    fresh_redis,
    start_workers,
    wait_for_workers,
)
from throughput import celery_worker, setup_django, wait_for

BENCH = Path(__file__).resolve().parent
TARGETS = {"embedded_p50_ms": 20.0, "celery_p50_ms": 50.0, "celery_vs_chain": 1.0}
PG = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
CHAIN_REDIS = os.environ.get("BENCH_CHAIN_REDIS_URL", "redis://127.0.0.1:6379/6")
WARMUP = 2  # uncounted pipelines (chains) per part: imports, connections, caches
FINAL = ("succeeded", "failed", "cancelled")


def figures(ms: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max, mean (ms)."""
    out: dict[str, Any] = {"n": len(ms), **summary(ms)}
    out["p90"] = round(percentile(sorted(ms), 90), 2) if ms else None
    return out


def brief(f: dict[str, Any] | None) -> str:
    if not f or not f["n"]:
        return "no samples"
    return f"p50 {f['p50']}, p90 {f['p90']}, p99 {f['p99']}, max {f['max']} ms (n={f['n']})"


# -- Tether (in a child process, Django set up) -------------------------------------------
def pipeline_doc(orders: int, width: int, n: int) -> dict[str, Any]:
    steps = [
        {"name": "bench_step", "order_no": order, "context": {}}
        for order in range(1, orders + 1)
        for _ in range(width)
    ]
    return {"pipeline_name": f"bench-{n}", "project": "bench", "transformers_list": steps}


def run_pipelines(user: Any, count: int, orders: int, width: int, timeout: float) -> list[int]:
    """Create ``count`` pipelines one after the other, each once the one before ended."""
    return [run_pipeline(user, pipeline_doc(orders, width, n), timeout) for n in range(count)]


def run_pipeline(user: Any, doc: dict[str, Any], timeout: float) -> int:
    from tether.models import Pipeline
    from tether.pipelines import control, spec

    pid = control.create(user, spec.parse(doc)).pk
    rows = Pipeline.objects.filter(pk=pid)
    wait_for(lambda: rows.values_list("status", flat=True)[0] in FINAL, timeout, f"pipeline {pid}")
    status, error = rows.values_list("status", "error")[0]
    if status != "succeeded":
        raise RuntimeError(f"pipeline {pid} {status}: {error}")
    return pid


def handoffs(ids: list[int]) -> dict[str, list[float]]:
    """The samples (ms) of every hand-off between consecutive orders of ``ids``."""
    from tether.models import PipelineStep, Task, TaskEvent

    groups: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for pid, order, task_id in PipelineStep.objects.filter(pipeline_id__in=ids).values_list(
        "pipeline_id", "order_no", "task_id"
    ):
        groups[pid][order].append(task_id)
    at: dict[tuple[int, str], float] = {}
    events = TaskEvent.objects.filter(task__pipeline_id__in=ids).order_by("id")
    for task_id, dst, when in events.values_list("task_id", "to_status", "at"):
        at.setdefault((task_id, dst), when.timestamp())  # the first, should it have run twice
    rows = Task.objects.filter(pipeline_id__in=ids).values_list("id", "result", "published_at")
    result: dict[int, dict[str, float]] = {i: r for i, r, _ in rows if r is not None}
    published = {i: p.timestamp() for i, _, p in rows if p is not None}
    out: dict[str, list[float]] = defaultdict(list)
    for by_order in groups.values():
        seq = sorted(by_order)
        for before, after in itertools.pairwise(seq):
            done = max(at[(t, "succeeded")] for t in by_order[before])
            ended = max(result[t]["end"] for t in by_order[before])
            out["return_to_succeeded"] += [
                (at[(t, "succeeded")] - result[t]["end"]) * 1000 for t in by_order[before]
            ]
            for t in by_order[after]:
                queued, running = at[(t, "queued")], at[(t, "running")]
                out["handoff"].append((running - done) * 1000)
                out["step_gap"].append((result[t]["start"] - ended) * 1000)
                out["succeeded_to_queued"].append((queued - done) * 1000)
                out["queued_to_running"].append((running - queued) * 1000)
                if t in published:
                    out["queued_to_published"].append((published[t] - queued) * 1000)
    return out


def measure(args: argparse.Namespace, name: str) -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("bench", password=None)
    run_pipelines(user, WARMUP, args.orders, 1, args.timeout)
    log(f"{name}: {args.pipelines} pipelines of {args.orders} orders, one after the other")
    t0 = time.perf_counter()
    serial = handoffs(run_pipelines(user, args.pipelines, args.orders, 1, args.timeout))
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {
        "handoff_ms": figures(serial.pop("handoff")),
        "step_gap_ms": figures(serial.pop("step_gap")),
        "breakdown_ms": {k: figures(v) for k, v in sorted(serial.items())},
        "seconds": round(elapsed, 2),
        "parallel": None,
    }
    log(f"{name}: hand-off {brief(out['handoff_ms'])}; step gap {brief(out['step_gap_ms'])}")
    if args.parallel_pipelines and args.width > 1:
        n, width = args.parallel_pipelines, args.width
        log(f"{name}: {n} pipelines of {args.orders} orders of {width} parallel steps")
        wide = handoffs(run_pipelines(user, n, args.orders, width, args.timeout))
        out["parallel"] = {
            "width": width,
            "handoff_ms": figures(wide["handoff"]),
            "step_gap_ms": figures(wide["step_gap"]),
        }
        log(f"{name}: parallel hand-off {brief(out['parallel']['handoff_ms'])}")
    return out


def part_embedded(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    setup_django(tmp / "home")
    from django.db import connections

    import _pipeline_steps  # noqa: F401  (registers the step type in this process)
    from tether import executors
    from tether.executors.embedded import EmbeddedExecutor

    executor = EmbeddedExecutor(workers=args.slots)
    executors.install(executor)
    executor.start()
    try:
        return {"slots": executor.slots, **measure(args, "embedded")}
    finally:
        executor.stop()
        connections.close_all()


def part_celery(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    steps = tmp / "steps"  # only the step module on the workers' path, not bench/
    steps.mkdir()
    shutil.copy(BENCH / "_pipeline_steps.py", steps)
    with contextlib.ExitStack() as stack:
        stack.enter_context(fresh_redis(args.redis))
        database = stack.enter_context(fresh_database(args.pg))
        settings = {
            "TETHER_HOME": str(tmp / "home"),
            "TETHER_DATABASE_URL": database,
            "TETHER_BROKER_URL": args.redis,
            "TETHER_TASK_MODULES": "_pipeline_steps",
            "TETHER_LOG_LEVEL": "WARNING",
            "TETHER_SECRET_KEY": "bench-" + uuid.uuid4().hex,
            "DJANGO_SETTINGS_MODULE": "tether.server.settings",
        }
        os.environ.update(settings)
        import django
        from django.core.management import call_command
        from django.db import connections

        django.setup()
        call_command("migrate", interactive=False, verbosity=0)
        stack.callback(connections.close_all)  # before the database is dropped
        env = tether_env(**settings)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(steps), env.get("PYTHONPATH")]))
        procs = start_workers(stack, env, tmp, args.processes, args.concurrency, args.redis, 60.0)
        from tether import executors
        from tether.executors.celery_executor import CeleryExecutor

        executor = CeleryExecutor()
        executors.install(executor)
        executor.start()
        stack.callback(executor.stop)
        result = measure(args, "celery")
        for i, proc in enumerate(procs):
            if proc.poll() is not None:
                raise RuntimeError(f"tether worker {i} exited with code {proc.returncode}")
        return {"processes": args.processes, "concurrency": args.concurrency, **result}


# -- plain Celery chain (in this process) --------------------------------------------------
def part_chain(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from celery import chain

    with contextlib.ExitStack() as stack:
        r = stack.enter_context(fresh_redis(args.chain_redis))
        os.environ["BENCH_CELERY_BROKER"] = args.chain_redis  # read by the app module
        import _celery_chain as cc

        procs = [
            stack.enter_context(
                celery_worker(
                    args.concurrency,
                    tmp,
                    args.chain_redis,
                    app="_celery_chain",
                    pool="threads",
                    name=f"chain-worker{i}",
                )
            )
            for i in range(args.processes)
        ]
        wait_for_workers(args.chain_redis, args.processes, procs, 60.0)

        def run_chain() -> list[float]:
            key = f"bench:chain:{uuid.uuid4().hex}"
            chain(*cc.signatures(key, args.orders)).apply_async()
            wait_for(lambda: r.llen(key) >= args.orders - 1, args.timeout, f"chain {key}")
            return [float(x) * 1000 for x in r.lrange(key, 0, -1)]

        def run(count: int) -> list[float]:
            return [gap for _ in range(count) for gap in run_chain()]

        run(WARMUP)
        log(f"chain: {args.pipelines} chains of {args.orders} links, one after the other")
        gaps = figures(run(args.pipelines))
        log(f"chain: step gap {brief(gaps)}")
        return {"processes": args.processes, "concurrency": args.concurrency, "step_gap_ms": gaps}


# -- main ---------------------------------------------------------------------------------
PARTS = {"embedded": part_embedded, "celery": part_celery}


def in_child(part: str) -> dict[str, Any] | None:
    """Run a Tether part in a child process of this script (each has its own Django
    settings); its figures, or None when its services are unreachable."""
    proc = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--part", part],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode == 2:
        return None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        raise RuntimeError(f"the {part} part failed (exit code {proc.returncode})")
    found: dict[str, Any] = json.loads(lines[-1])
    return found


def p50(part: dict[str, Any] | None, key: str = "handoff_ms") -> float | None:
    return None if part is None else part[key]["p50"]


def report(args: argparse.Namespace, parts: dict[str, dict[str, Any] | None]) -> dict[str, Any]:
    embedded, celery, chain = parts.get("embedded"), parts.get("celery"), parts.get("chain")
    chain_p50 = p50(chain, "step_gap_ms")
    gap_ratio = handoff_ratio = None
    if chain_p50 and celery:
        gap_ratio = round(p50(celery, "step_gap_ms") / chain_p50, 2)  # type: ignore[operator]
        handoff_ratio = round(p50(celery) / chain_p50, 2)  # type: ignore[operator]

    def at_most(value: float | None, target: float) -> bool | None:
        return None if value is None else value <= target

    return {
        "benchmark": "pipelines",
        "orders": args.orders,
        "pipelines": args.pipelines,
        "embedded_p50_ms": p50(embedded),
        "embedded_p99_ms": None if embedded is None else embedded["handoff_ms"]["p99"],
        "celery_p50_ms": p50(celery),
        "celery_p99_ms": None if celery is None else celery["handoff_ms"]["p99"],
        "chain_p50_ms": chain_p50,
        "chain_p99_ms": None if chain is None else chain["step_gap_ms"]["p99"],
        "celery_step_gap_vs_chain": gap_ratio,
        "celery_handoff_vs_chain": handoff_ratio,
        "targets": TARGETS,
        "meets": {
            "embedded": at_most(p50(embedded), TARGETS["embedded_p50_ms"]),
            "celery": at_most(p50(celery), TARGETS["celery_p50_ms"]),
            "celery_vs_chain": at_most(gap_ratio, TARGETS["celery_vs_chain"]),
        },
        "embedded": embedded,
        "celery": celery,
        "chain": chain,
        "database": {"embedded": "sqlite", "celery": "postgresql"},
        "broker": "redis",
        "cpu_count": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipelines", type=int, default=30, help="pipelines (and chains)")
    parser.add_argument("--orders", type=int, default=10, help="orders (links) in each")
    parser.add_argument("--width", type=int, default=2, help="steps per order, parallel part")
    parser.add_argument("--parallel-pipelines", type=int, default=12, help="0: no parallel part")
    parser.add_argument("--processes", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="threads per Celery worker")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1, help="embedded")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per pipeline")
    parser.add_argument("--quick", action="store_true", help="6 pipelines, 3 parallel")
    parser.add_argument("--no-celery", dest="celery", action="store_false")
    parser.add_argument("--pg", default=PG, help="PostgreSQL server URL, no database")
    parser.add_argument("--redis", default=REDIS, help="Tether's broker (flushed)")
    parser.add_argument("--chain-redis", default=CHAIN_REDIS, help="the chain's (flushed)")
    parser.add_argument("--part", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.pipelines, args.parallel_pipelines = 6, min(args.parallel_pipelines, 3)
    args.orders = max(2, args.orders)
    args.pipelines = max(1, args.pipelines)
    args.processes = max(1, args.processes)
    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-pipelines-"))
    try:
        if args.part:
            try:
                print(json.dumps(PARTS[args.part](args, tmp)))
            except Unreachable as exc:
                log(f"{args.part}: skipped: {exc}")
                return 2
            return 0
        load_before = os.getloadavg()[0]
        parts: dict[str, dict[str, Any] | None] = {"embedded": in_child("embedded")}
        if args.celery:
            parts["celery"] = in_child("celery")
            try:
                parts["chain"] = part_chain(args, tmp)
            except Unreachable as exc:
                log(f"chain: skipped: {exc}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = report(args, parts)
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    where = {"embedded": "SQLite", "celery": "PostgreSQL + Redis", "chain": "plain Celery"}
    for name, part in parts.items():
        if part is not None and "handoff_ms" in part:
            log(f"hand-off, {name} ({where[name]}): {brief(part['handoff_ms'])}")
        if part is not None:
            log(f"step gap (return -> next start), {name}: {brief(part['step_gap_ms'])}")
    log(
        f"Celery vs chain (p50): step gap x{result['celery_step_gap_vs_chain']}, "
        f"hand-off x{result['celery_handoff_vs_chain']}; targets {TARGETS}; meets {result['meets']}"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
