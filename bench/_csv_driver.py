"""Driver for bench/csv_datasets.py: one Tether process (Django + the embedded executor,
one worker slot) that runs csv_import / csv_export tasks through the real engine and
prints its figures as one JSON object on the last stdout line. Started by
bench/csv_datasets.py with the environment TETHER_HOME, TETHER_DATABASE_URL (PostgreSQL modes),
DJANGO_SETTINGS_MODULE.

    _csv_driver.py import FILE --rows N [--repeat R] [--plain-copy] [--export]
                   [--pause-trials K] [--hold]

``--plain-copy`` (PostgreSQL): before each import, PostgreSQL's own COPY in and out of
the same file on a connection of its own (see plain_copy), so both sides run at nearly
the same moment. ``import``: migrate, create a user, hard-link FILE into
TETHER_HOME/uploads, submit a csv_import task and time it from submit until it has
succeeded (the ``watch`` event of the transition, no polling slack); R times (a new
dataset each time). ``--export``: after each import, export that dataset (csv_export)
and time it the same way.
``--pause-trials K``: then import the file again and, K times while it loads, time
service.pause -> status ``paused`` (then resume it and let it load again). ``--hold``:
after printing the figures, wait until stdin is closed (so the parent can read this
process's VmHWM from /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

WAIT_TIMEOUT = 900.0


def log(msg: str) -> None:
    print(f"  [driver {os.getpid()}] {msg}", file=sys.stderr, flush=True)


def setup() -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def link_upload(owner: Any, src: Path) -> Any:
    """An Upload row for ``src`` (hard-linked into the uploads dir: the import deletes
    the upload when done, which only removes the link)."""
    from tether.datasets.files import new_upload_path
    from tether.models import Upload

    path = new_upload_path()
    try:
        os.link(src, path)
    except OSError:
        shutil.copyfile(src, path)
    return Upload.objects.create(owner=owner, path=path.name, size=path.stat().st_size)


def run_task(owner: Any, kind: str, params: dict[str, Any]) -> tuple[float, Any]:
    """Submit a task and wait (event-driven) until it succeeded; (seconds, task)."""
    from tether import service, transitions
    from tether.models import Task
    from tether.states import Status

    final = {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}
    t0 = time.perf_counter()
    task = service.submit(owner, kind, params)
    with transitions.watch(task.pk, final) as done:
        while not done.wait(0.5):
            if Task.objects.filter(pk=task.pk, status__in=final).exists():
                break
            if time.perf_counter() - t0 > WAIT_TIMEOUT:
                raise TimeoutError(f"{kind} task {task.pk} did not finish")
    seconds = time.perf_counter() - t0
    task = Task.objects.get(pk=task.pk)
    if task.status != Status.SUCCEEDED:
        raise RuntimeError(f"{kind} task {task.pk} {task.status}: {task.error}")
    return seconds, task


def loaded(task_id: int) -> int:
    from tether.models import Task

    state = Task.objects.filter(pk=task_id).values_list("checkpoint", flat=True).first()
    return int((state or {}).get("loaded", 0))


COPY_COLUMNS = (
    "id BIGINT, customer TEXT, email TEXT, amount DOUBLE PRECISION, "
    "quantity BIGINT, paid BOOLEAN, ordered_at TIMESTAMPTZ, ship_date DATE, "
    "note TEXT"
)
COPY_NAMES = "id, customer, email, amount, quantity, paid, ordered_at, ship_date, note"


def plain_copy(src: Path, rows: int, out_dir: Path) -> dict[str, float]:
    """PostgreSQL's own speed, on a connection of its own (psycopg, 1 MiB writes):
    ``COPY copy_bench FROM STDIN (FORMAT csv, HEADER)`` into a table of the same 9
    types, timed to its commit; ``COPY copy_bench TO STDOUT (FORMAT csv)`` to a file
    (also timed with an fsync of the file at the end); and, for reference, the same
    load into the shape the engine makes (a row key from an identity column, then its
    primary key)."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    times: dict[str, float] = {}
    with psycopg.connect(**params) as conn:

        def load(table: str, ddl: str, names: str, after: str | None = None) -> float:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(f"CREATE TABLE {table} ({ddl})")
            conn.commit()
            t0 = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT csv, HEADER)") as copy,
                open(src, "rb") as f,
            ):
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
            if after:
                conn.execute(after)
            conn.commit()
            seconds = time.perf_counter() - t0
            count = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
            if not count or count[0] != rows:
                raise RuntimeError(f"COPY loaded {count} rows, expected {rows}")
            return seconds

        times["copy_in_s"] = load("copy_bench", COPY_COLUMNS, COPY_NAMES)
        out = out_dir / "copy-out.csv"
        t0 = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy("COPY copy_bench TO STDOUT (FORMAT csv)") as copy,
            open(out, "wb") as f,
        ):
            for data in copy:
                f.write(data)
            times["copy_out_s"] = time.perf_counter() - t0
            f.flush()
            os.fsync(f.fileno())  # (for reference: a file as durable as the export's)
        times["copy_out_synced_s"] = time.perf_counter() - t0
        out.unlink()
        times["copy_keyed_s"] = load(
            "copy_keyed",
            f"_rid BIGINT GENERATED BY DEFAULT AS IDENTITY, {COPY_COLUMNS}",
            COPY_NAMES,
            "ALTER TABLE copy_keyed ADD PRIMARY KEY (_rid)",
        )
        conn.execute("DROP TABLE copy_bench")
        conn.execute("DROP TABLE copy_keyed")
        conn.commit()
    return times


PAUSE_WITHIN = 1.0  # seconds after a batch committed: when a trial's pause comes


def drop_dataset(owner: Any, name: str) -> None:
    from tether.datasets import sql
    from tether.models import Dataset

    ds = Dataset.objects.filter(owner=owner, name=name).first()
    if ds is not None:
        sql.drop_table(ds.table)
        ds.delete()


def pause_trials(owner: Any, src: Path, rows: int, trials: int) -> dict[str, Any]:
    """``trials`` times during an import: service.pause -> ``paused`` (ms). Each import
    paused and resumed must load exactly ``rows`` rows."""
    from tether import service, transitions
    from tether.exceptions import TetherError
    from tether.models import Task
    from tether.states import Status

    rnd = random.Random(7)
    samples: list[float] = []
    imports = 0
    task_id = None
    while len(samples) < trials:
        if task_id is None or Task.objects.get(pk=task_id).status == Status.SUCCEEDED:
            if task_id is not None:
                got = (Task.objects.get(pk=task_id).result or {}).get("rows")
                if got != rows:
                    raise RuntimeError(f"import {task_id} paused and resumed loaded {got} rows")
                drop_dataset(owner, f"pause_{imports}_{os.getpid()}")  # (keep the db small)
            imports += 1
            up = link_upload(owner, src)
            task_id = service.submit(
                owner,
                "csv_import",
                {"upload": up.public_id, "dataset": f"pause_{imports}_{os.getpid()}"},
            ).pk
        # wait until it is loading (a batch committed since it was last resumed) ...
        base = loaded(task_id)
        deadline = time.monotonic() + 60
        while loaded(task_id) <= base:
            task = Task.objects.get(pk=task_id)
            if task.status == Status.SUCCEEDED:
                break
            if time.monotonic() > deadline or task.status in (Status.FAILED, Status.CANCELLED):
                raise RuntimeError(
                    f"import {task_id} makes no progress: {task.status} {task.error or ''}"
                )
            time.sleep(0.005)
        # ... and pause at a random point of this batch or the next (a batch is about a
        # second on PostgreSQL, a fraction of one elsewhere)
        time.sleep(rnd.uniform(0.0, PAUSE_WITHIN))
        with transitions.watch(
            task_id, {Status.PAUSED, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}
        ) as settled:
            t0 = time.perf_counter()
            try:
                service.pause(task_id, actor="bench")
            except TetherError:  # it finished meanwhile
                continue
            if not settled.wait(30):
                raise TimeoutError(f"import {task_id} did not pause")
            ms = (time.perf_counter() - t0) * 1000
        task = Task.objects.get(pk=task_id)
        if task.status in (Status.FAILED, Status.CANCELLED):
            raise RuntimeError(f"import {task_id} {task.status}: {task.error}")
        if task.status != Status.PAUSED:
            continue  # it finished before the pause reached it: not a pause
        samples.append(ms)
        service.resume(task_id, actor="bench")
    if task_id is not None and Task.objects.get(pk=task_id).status not in (
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELLED,
    ):
        service.cancel(task_id, actor="bench")  # do not leave it loading
        with transitions.watch(task_id, {Status.CANCELLED}) as gone:
            gone.wait(30)
    return {"pause_ms": samples, "pause_imports": imports}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["import"])
    parser.add_argument("file", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--dataset", default="bench")
    parser.add_argument("--repeat", type=int, default=1, help="imports (and exports)")
    parser.add_argument("--export", action="store_true")
    parser.add_argument(
        "--plain-copy",
        action="store_true",
        help="PostgreSQL: plain COPY in and out before each import",
    )
    parser.add_argument("--pause-trials", type=int, default=0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()

    setup()
    from django.contrib.auth import get_user_model

    from tether.datasets.files import export_path
    from tether.executors.embedded import EmbeddedExecutor

    owner = get_user_model().objects.get_or_create(username="bench")[0]
    executor = EmbeddedExecutor(1)
    executor.start()
    out: dict[str, Any] = {
        "import_s": [],
        "export_s": [],
        "copy_in_s": [],
        "copy_out_s": [],
        "copy_out_synced_s": [],
        "copy_keyed_s": [],
    }
    try:
        for i in range(1, args.repeat + 1):
            if args.plain_copy:
                for key, value in plain_copy(args.file, args.rows, args.file.parent).items():
                    out[key].append(value)
                log(
                    f"plain COPY {i}/{args.repeat}: FROM {out['copy_in_s'][-1]:.3f} s, "
                    f"TO {out['copy_out_s'][-1]:.3f} s, into the engine's table shape "
                    f"{out['copy_keyed_s'][-1]:.3f} s"
                )
            name = args.dataset if args.repeat == 1 else f"{args.dataset}_{i}"
            up = link_upload(owner, args.file)
            seconds, task = run_task(owner, "csv_import", {"upload": up.public_id, "dataset": name})
            if task.result["rows"] != args.rows:
                raise RuntimeError(f"imported {task.result['rows']} rows, expected {args.rows}")
            out["import_s"].append(seconds)
            out.update(
                import_task_s=task.result["seconds"],
                columns=[c["type"] for c in task.result["columns"]],
            )
            log(
                f"csv_import {i}/{args.repeat}: {args.rows:,} rows in {seconds:.3f} s, "
                f"{args.rows / seconds:,.0f} rows/s"
            )
            if args.export:
                seconds, task = run_task(owner, "csv_export", {"dataset": name})
                path = export_path(task.pk)
                if task.result["rows"] != args.rows:
                    raise RuntimeError(f"exported {task.result['rows']} rows")
                out["export_s"].append(seconds)
                out["export_bytes"] = path.stat().st_size
                path.unlink()
                log(
                    f"csv_export {i}/{args.repeat}: {seconds:.3f} s, "
                    f"{args.rows / seconds:,.0f} rows/s"
                )
            if i < args.repeat:  # keep the database small: drop all but the last
                drop_dataset(owner, name)
        if args.pause_trials:
            log(f"{args.pause_trials} pause trials during an import")
            out.update(pause_trials(owner, args.file, args.rows, args.pause_trials))
    finally:
        executor.stop()
    print(json.dumps(out), flush=True)
    if args.hold:
        sys.stdin.read()  # the parent reads /proc/<pid>/status, then closes stdin
    return 0


if __name__ == "__main__":
    sys.exit(main())
