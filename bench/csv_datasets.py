"""CSV datasets at database speed: import and export through the real engine
vs. PostgreSQL's own COPY, SQLite import speed, worker memory and pause latency, in one
run.

1. ``tether gen-csv --rows N -o FILE`` (default 1,000,000 rows, 9 columns: integers,
   floats, booleans, timestamps with a zone, dates, text with quotes, commas and
   newlines) in a temporary directory.
2. A fresh PostgreSQL database (created and dropped by the bench, on --pg-url), and a
   driver process (bench/_csv_driver.py: Django, migrate, a user, ``EmbeddedExecutor(1)``)
   that does, --repeat times (the best run of each kind counts):
   * plain ``COPY copy_bench FROM STDIN (FORMAT csv, HEADER)`` of FILE with psycopg
     (1 MiB writes) into a table of the same 9 types, timed to its commit; plain
     ``COPY copy_bench TO STDOUT (FORMAT csv)`` to a file; and, for reference, the same
     with an fsync of the file at the end (the export's file is durable), and the plain
     COPY into the table shape the engine makes (an identity row key, then its
     primary key);
   * the engine: a ``csv_import`` task for an Upload row of a hard link of FILE under
     TETHER_HOME/uploads, timed from ``service.submit`` to status ``succeeded``, then a
     ``csv_export`` of that dataset timed the same way;
   then --pause-trials pauses (``service.pause`` -> status ``paused``, each at a random
   point while an import of FILE loads, then resumed). The ratios are engine rows/s over
   COPY rows/s (targets >= 0.75).
3. The same import into SQLite (a driver with its own TETHER_HOME): rows/s
   (target >= 200,000), then --pause-trials pauses the same way.
4. Peak RSS (VmHWM from /proc/<pid>/status) of a driver process importing a
   ``--big-rows`` file (default 5,000,000: FILE's rows repeated) into PostgreSQL
   (target <= 150 MB). ``--big-rows 0`` skips it.
5. With --mysql-url: the import and --pause-trials pauses on MariaDB/MySQL (a fresh
   database, created and dropped by the bench).

Each pause trial waits until the import has committed a batch since it was last
resumed, then pauses it at a random moment in the next second (a batch is about a
second on PostgreSQL, a fraction of one elsewhere), times it to ``paused`` and resumes
it; every import paused this way must load exactly --rows rows. Pause targets: p99
<= 100 ms on PostgreSQL and SQLite.

Progress goes to stderr; the last line of stdout is one JSON object.

    .venv/bin/python bench/csv_datasets.py [--rows 1000000] [--big-rows 5000000]
        [--pause-trials 30] [--pg-url postgres://postgres@127.0.0.1:5432]
        [--mysql-url mysql://root@127.0.0.1:3306]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from _common import log, summary, tether_env, tether_executable

BENCH_DIR = Path(__file__).resolve().parent
TARGETS = {
    "pg_import_ratio": 0.75,
    "pg_export_ratio": 0.75,
    "sqlite_import_rows_per_s": 200_000,
    "peak_rss_mb": 150,
    "pause_p99_ms": 100,  # PostgreSQL and SQLite
}
ENGINE_TYPES = [
    "integer",
    "text",
    "text",
    "float",
    "integer",
    "boolean",
    "timestamptz",
    "date",
    "text",
]
CHUNK = 1 << 20


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def generate(path: Path, rows: int) -> None:
    cmd = [*tether_executable(), "gen-csv", "--rows", str(rows), "-o", str(path)]
    log(f"generate: {' '.join(cmd)}")
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd,
        env=tether_env(TETHER_HOME=str(path.parent / "gen-home")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:  # the CLI may be mid-change: same generator, in-process
        log(
            f"generate: tether gen-csv failed ({done.stderr.decode()[-300:].strip()}); "
            "using tether.datasets.generate"
        )
        from tether.datasets import generate as gen

        with open(path, "w", encoding="utf-8", newline="") as out:
            gen.write(out, rows)
    log(
        f"generate: {rows:,} rows, {path.stat().st_size / 1e6:.1f} MB in "
        f"{time.perf_counter() - t0:.1f} s"
    )


def repeat_rows(src: Path, dst: Path, rows: int, have: int) -> None:
    """``rows`` data rows: src's header, then src's rows over and over, then as many of
    its first records as are still missing."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        out.write(f.readline())
        body_at = f.tell()
        for _ in range(rows // have):
            f.seek(body_at)
            shutil.copyfileobj(f, out, 16 * CHUNK)
        if rows % have:
            f.seek(0)
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            records = csv.reader(text)
            next(records)
            sink = io.TextIOWrapper(out, encoding="utf-8", newline="")
            writer = csv.writer(sink, lineterminator="\n")
            for _, record in zip(range(rows % have), records, strict=False):
                writer.writerow(record)
            sink.flush()
            sink.detach()
            text.detach()


@contextlib.contextmanager
def fresh_mysql_database(url: str, name: str) -> Any:
    import pymysql

    parts = urlsplit(url)

    def admin(sql: str) -> None:
        conn = pymysql.connect(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 3306,
            user=parts.username or "root",
            password=parts.password or "",
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    admin(f"DROP DATABASE IF EXISTS `{name}`")
    admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield with_db(url, name)
    finally:
        admin(f"DROP DATABASE IF EXISTS `{name}`")


def pause_figures(prefix: str, samples: list[float]) -> dict[str, Any]:
    pause = summary(samples)
    log(
        f"{prefix or 'pg_'}pause during an import: p50 {pause['p50']} ms, p99 {pause['p99']} "
        f"ms (max {pause['max']} ms, {len(samples)} trials)"
    )
    return {
        f"{prefix}pause_p50_ms": pause["p50"],
        f"{prefix}pause_p99_ms": pause["p99"],
        f"{prefix}pause_max_ms": pause["max"],
        f"{prefix}pause_trials": len(samples),
    }


@contextlib.contextmanager
def fresh_database(url: str, name: str) -> Any:
    with psycopg.connect(with_db(url, "postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_db(url, name)
    finally:
        with psycopg.connect(with_db(url, "postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def driver(
    file: Path, rows: int, env: dict[str, str], *extra: str, hold: bool = False
) -> tuple[dict[str, Any], float | None]:
    """Run bench/_csv_driver.py; its figures, and its VmHWM in MB when ``hold``."""
    cmd = [
        sys.executable,
        str(BENCH_DIR / "_csv_driver.py"),
        "import",
        str(file),
        "--rows",
        str(rows),
        *extra,
        *(["--hold"] if hold else []),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stdin=subprocess.PIPE if hold else subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    peak = None
    if hold:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{proc.pid}/status").read_text()
            for field in status.splitlines():
                if field.startswith("VmHWM:"):
                    peak = int(field.split()[1]) / 1024
        assert proc.stdin is not None
        proc.stdin.close()
    rest = proc.stdout.read()
    if proc.wait() != 0 or not line.strip():
        raise RuntimeError(f"driver failed (exit {proc.returncode}): {(line + rest)[-500:]!r}")
    return json.loads(line), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--big-rows", type=int, default=5_000_000, help="rows of the peak-RSS import (0: skip it)"
    )
    parser.add_argument("--pause-trials", type=int, default=30)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each timed import/export/COPY (the best counts)",
    )
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument(
        "--mysql-url",
        default="",
        help="also import and pause on MariaDB/MySQL (e.g. mysql://root@127.0.0.1:3306)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    rows = max(1, args.rows)
    repeat = max(1, args.repeat)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-csv-"))
    db_name = f"tether_bench_csv_{os.getpid()}"
    out: dict[str, Any] = {
        "benchmark": "csv",
        "rows": rows,
        "big_rows": args.big_rows,
        "repeat": repeat,
        "cpu_count": os.cpu_count(),
    }
    try:
        data = tmp / "data.csv"
        generate(data, rows)
        out["file_mb"] = round(data.stat().st_size / 1e6, 1)

        with fresh_database(args.pg_url, db_name) as db_url:
            env = tether_env(
                TETHER_HOME=str(tmp / "home-pg"),
                TETHER_DATABASE_URL=db_url,
                DJANGO_SETTINGS_MODULE="tether.server.settings",
                TETHER_LOG_LEVEL="WARNING",
            )
            log(
                f"postgresql: database {db_name}; {repeat} x (plain COPY FROM STDIN and TO "
                "STDOUT, engine csv_import and csv_export), then pause trials"
            )
            pg, _ = driver(
                data,
                rows,
                env,
                "--repeat",
                str(repeat),
                "--plain-copy",
                "--export",
                "--pause-trials",
                str(args.pause_trials),
            )
            if pg["columns"] != ENGINE_TYPES:
                raise RuntimeError(f"the engine inferred {pg['columns']}")
            best = {
                k: min(pg[k])
                for k in (
                    "copy_in_s",
                    "copy_out_s",
                    "copy_out_synced_s",
                    "copy_keyed_s",
                    "import_s",
                    "export_s",
                )
            }
            out["pg_copy_rows_per_s"] = round(rows / best["copy_in_s"])
            out["pg_import_rows_per_s"] = round(rows / best["import_s"])
            out["pg_import_ratio"] = round(best["copy_in_s"] / best["import_s"], 3)
            out["pg_copy_to_rows_per_s"] = round(rows / best["copy_out_s"])
            out["pg_export_rows_per_s"] = round(rows / best["export_s"])
            out["pg_export_ratio"] = round(best["copy_out_s"] / best["export_s"], 3)
            out["pg_export_ratio_synced"] = round(best["copy_out_synced_s"] / best["export_s"], 3)
            out["pg_copy_keyed_rows_per_s"] = round(rows / best["copy_keyed_s"])
            out["pg_import_ratio_keyed"] = round(best["copy_keyed_s"] / best["import_s"], 3)
            for k in (
                "copy_in_s",
                "import_s",
                "copy_keyed_s",
                "copy_out_s",
                "copy_out_synced_s",
                "export_s",
            ):
                out[f"pg_{k}"] = [round(x, 3) for x in pg[k]]
            out.update(pause_figures("", pg.get("pause_ms", [])))  # (PostgreSQL's)
            log(
                f"postgresql: import {out['pg_import_rows_per_s']:,} rows/s vs COPY "
                f"{out['pg_copy_rows_per_s']:,}: {out['pg_import_ratio']}x (vs COPY into "
                f"the engine's table shape, row key and primary key: "
                f"{out['pg_import_ratio_keyed']}x); export "
                f"{out['pg_export_rows_per_s']:,} rows/s vs COPY TO "
                f"{out['pg_copy_to_rows_per_s']:,}: {out['pg_export_ratio']}x (vs COPY TO "
                f"and an fsync of the file: {out['pg_export_ratio_synced']}x) (best of "
                f"{repeat} each)"
            )

            if args.big_rows:
                big = tmp / "big.csv"
                if args.big_rows == rows:
                    big = data
                else:
                    repeat_rows(data, big, args.big_rows, rows)
                log(
                    f"postgresql: peak RSS of a worker importing {args.big_rows:,} rows "
                    f"({big.stat().st_size / 1e6:.0f} MB)"
                )
                big_env = {**env, "TETHER_HOME": str(tmp / "home-big")}
                res, peak = driver(big, args.big_rows, big_env, "--dataset", "big", hold=True)
                out["peak_rss_mb"] = round(peak, 1) if peak is not None else None
                out["big_import_rows_per_s"] = round(args.big_rows / res["import_s"][0])
                log(
                    f"postgresql: {args.big_rows:,} rows in {res['import_s'][0]:.1f} s, "
                    f"peak RSS {out['peak_rss_mb']} MB"
                )
            else:
                out["peak_rss_mb"] = None

        log("sqlite: engine csv_import")
        env = tether_env(
            TETHER_HOME=str(tmp / "home-sqlite"),
            DJANGO_SETTINGS_MODULE="tether.server.settings",
            TETHER_LOG_LEVEL="WARNING",
        )
        lite, _ = driver(
            data, rows, env, "--repeat", str(repeat), "--pause-trials", str(args.pause_trials)
        )
        out["sqlite_import_rows_per_s"] = round(rows / min(lite["import_s"]))
        out["sqlite_import_s"] = [round(x, 3) for x in lite["import_s"]]
        log(f"sqlite: import {out['sqlite_import_rows_per_s']:,} rows/s (best of {repeat})")
        out.update(pause_figures("sqlite_", lite.get("pause_ms", [])))

        if args.mysql_url:
            with fresh_mysql_database(args.mysql_url, db_name) as my_url:
                log(f"mysql: database {db_name}; engine csv_import, then pause trials")
                env = tether_env(
                    TETHER_HOME=str(tmp / "home-mysql"),
                    TETHER_DATABASE_URL=my_url,
                    DJANGO_SETTINGS_MODULE="tether.server.settings",
                    TETHER_LOG_LEVEL="WARNING",
                )
                my, _ = driver(data, rows, env, "--pause-trials", str(args.pause_trials))
                out["mysql_import_rows_per_s"] = round(rows / min(my["import_s"]))
                log(f"mysql: import {out['mysql_import_rows_per_s']:,} rows/s")
                out.update(pause_figures("mysql_", my.get("pause_ms", [])))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    out["targets"] = TARGETS
    meets = {
        "pg_import": out["pg_import_ratio"] >= TARGETS["pg_import_ratio"],
        "pg_export": out["pg_export_ratio"] >= TARGETS["pg_export_ratio"],
        "sqlite_import": out["sqlite_import_rows_per_s"] >= TARGETS["sqlite_import_rows_per_s"],
        "peak_rss": (
            out["peak_rss_mb"] is not None and out["peak_rss_mb"] <= TARGETS["peak_rss_mb"]
        ),
        "pause_p99": all(
            out[k] is not None and out[k] <= TARGETS["pause_p99_ms"]
            for k in ("pause_p99_ms", "sqlite_pause_p99_ms")
        ),
    }
    out["meets_target"] = meets
    out["meets_all_targets"] = all(meets.values())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
