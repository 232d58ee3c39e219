"""Acceptance: CSV datasets with the real ``tether serve`` and the real ``tether`` CLI —
gen-csv, import, datasets, export of a date range, a server killed (SIGKILL) mid-import,
and a cancelled import that leaves no trace."""

from __future__ import annotations

import csv
import gzip
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.acceptance.cli_helpers import Cli
from tests.acceptance.conftest import (
    Server,
    ServerFactory,
    events,
    get_task,
    wait_for,
    wait_progress,
)

FINAL = ("succeeded", "failed", "cancelled")
# slow the import down (not its result) so that a test can act while it runs
KNOBS = {
    "TETHER_APPS": "tests.acceptance.dataset_knobs.DatasetKnobs",
    "ACC_IMPORT_BATCH_ROWS": "2000",
    "ACC_IMPORT_BATCH_DELAY_MS": "25",
}


def query(srv: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the server's SQLite database directly (read-only)."""
    con = sqlite3.connect(f"file:{srv.db_path}?mode=ro", uri=True, timeout=30)
    try:
        return list(con.execute(sql, args).fetchall())
    finally:
        con.close()


def dataset_tables(srv: Server) -> set[str]:
    return {
        r[0]
        for r in query(
            srv,
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND (name LIKE 'tds\\_%' ESCAPE '\\' "
            "OR name LIKE 'tstg\\_%' ESCAPE '\\')",
        )
    }


def table_rows(srv: Server, dataset: str) -> list[tuple[Any, ...]]:
    [(table,)] = query(srv, 'SELECT "table" FROM tether_dataset WHERE name = ?', dataset)
    assert str(table).startswith("tds_")
    return query(srv, f'SELECT * FROM "{table}" ORDER BY _rid')


def gen_csv(cli: Cli, path: Path, rows: int, seed: int = 7) -> list[dict[str, str]]:
    r = cli.run("gen-csv", "--rows", str(rows), "--seed", str(seed), "-o", str(path), timeout=120)
    assert r.returncode == 0, r
    assert f"wrote {rows:,} rows" in r.stderr
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def normalised(row: dict[str, str]) -> tuple[Any, ...]:
    """A gen-csv row as typed values (how an export writes them may differ: 12.50 vs
    12.5, Z vs +00:00)."""
    return (
        int(row["id"]),
        row["customer"],
        row["email"],
        float(row["amount"]),
        int(row["quantity"]),
        row["paid"] in ("true", "t"),
        datetime.fromisoformat(row["ordered_at"].replace("Z", "+00:00")),
        row["ship_date"],
        row["note"],
    )


def test_gen_import_list_export_date_range(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=2), tmp_path / "cfg")
    cli.login("dana")
    source_file = tmp_path / "orders.csv"
    source = gen_csv(cli, source_file, 5000)

    r = cli.run("import", str(source_file), "--dataset", "orders", "--watch", timeout=120)
    assert r.returncode == 0, r
    task_id = int(r.stdout.splitlines()[0])
    assert f"task {task_id} (csv_import): succeeded" in r.stdout, r
    assert "uploaded orders.csv" in r.stderr and "\x1b[" not in r.stdout

    [listed] = cli.json("datasets")
    assert listed["name"] == "orders" and listed["row_count"] == 5000
    assert listed["last_import_task"] == task_id
    assert [c["type"] for c in listed["columns"]] == [
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
    table = cli.ok("datasets")
    assert "orders" in table and "5,000" in table and "id:integer" in table
    shown = cli.ok("datasets", "orders", "--rows", "3")
    assert "rows 1-3 of 5,000" in shown and "ship_date" in shown
    preview = cli.json("datasets", "orders", "--rows", "2", "--offset", "10")
    assert [row[0] for row in preview["preview"]] == [11, 12]

    # a date range of it, back to CSV
    dest = tmp_path / "out" / "q1-2021.csv"
    dest.parent.mkdir()
    r = cli.run(
        "export",
        "orders",
        "--from",
        "2021-01-01",
        "--to",
        "2021-03-31",
        "--date-column",
        "ship_date",
        "--raw",
        "-o",
        str(dest),
        timeout=120,
    )
    assert r.returncode == 0, r
    export_id = int(r.stdout.strip())
    wanted = [s for s in source if "2021-01-01" <= s["ship_date"] <= "2021-03-31"]
    assert f"wrote {len(wanted):,} rows" in r.stderr, r
    with open(dest, encoding="utf-8", newline="") as f:
        got = list(csv.DictReader(f))
    assert wanted and [normalised(g) for g in got] == [normalised(w) for w in wanted]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["q1-2021.csv"]  # no temp file
    assert "\n" in "".join(g["note"] for g in got)  # quoted newlines survived

    # the same file again through `tether download`, and the formula-neutralised export
    again = tmp_path / "again.csv"
    cli.ok("download", str(export_id), "-o", str(again))
    assert again.read_bytes() == dest.read_bytes()
    safe = tmp_path / "safe.csv"
    cli.ok(
        "export",
        "orders",
        "--from",
        "2021-01-01",
        "--to",
        "2021-03-31",
        "-o",
        str(safe),
        "--date-column",
        "ship_date",
        "--columns",
        "id,note",
    )
    with open(safe, encoding="utf-8", newline="") as f:
        notes = [row["note"] for row in csv.DictReader(f)]
    assert "'=not a formula" in notes and "=not a formula" not in notes

    # mistakes: one line, an exit code, nothing uploaded or submitted
    for args, code, words in [
        (("import", str(source_file), "--dataset", "orders"), 1, "exists already"),
        (("import", str(source_file), "--dataset", "x", "--mode", "append"), 1, "no dataset 'x'"),
        (("import", str(source_file), "--dataset", "../x"), 2, "not allowed"),
        (("import", str(tmp_path / "missing.csv"), "--dataset", "x"), 2, "cannot read"),
        (("import", str(source_file), "--dataset", "x", "--columns", "a:money"), 2, "NAME:TYPE"),
        (
            (
                "export",
                "orders",
                "--from",
                "2021-02-01",
                "--to",
                "2021-01-01",
                "-o",
                str(tmp_path / "x.csv"),
            ),
            2,
            "after",
        ),
        (
            ("export", "orders", "--from", "2021-01-01", "-o", str(tmp_path / "x.csv")),
            2,
            "--date-column",
        ),
        (("export", "nope", "-o", str(tmp_path / "x.csv")), 1, "no dataset 'nope'"),
        (
            ("export", "orders", "--columns", "id,bogus", "-o", str(tmp_path / "x.csv")),
            1,
            "unknown column",
        ),
        (("download", str(task_id), "-o", str(tmp_path / "x.csv")), 1, "csv_export"),
        (("datasets", "nope"), 1, "no dataset 'nope'"),
        (("datasets", "rm", "orders"), 2, "--yes"),
    ]:
        r = cli.run(*args, input="")  # stdin not a terminal: rm cannot ask
        assert r.returncode == code and words in r.stderr, (args, r)
        assert r.stderr.startswith("tether: ") and "Traceback" not in r.stderr, r
    assert not (tmp_path / "x.csv").exists()
    assert [d["name"] for d in cli.json("datasets")] == ["orders"]

    assert cli.ok("datasets", "rm", "orders", "--yes").strip() == "dataset orders: deleted"
    assert cli.json("datasets") == []
    assert dataset_tables(cli.server) == set()


def test_import_watch_on_a_terminal_shows_progress(server: ServerFactory, tmp_path: Path) -> None:
    cli = Cli(server(workers=1, **KNOBS), tmp_path / "cfg")
    cli.login("gil")
    path = tmp_path / "orders.csv"
    gen_csv(cli, path, 60_000)  # 6.6 MB: an upload bar too
    code, output = cli.run_in_pty("import", str(path), "--dataset", "orders", "--watch", timeout=90)
    assert code == 0, output
    found = re.search(r"#(\d+) csv_import", output)
    assert found, output
    task_id = int(found.group(1))
    assert "upload orders.csv" in output and "MB" in output, output  # the upload bar
    assert "%" in output and "━" in output, output
    assert f"task {task_id} (csv_import): succeeded" in output, output
    assert "Traceback" not in output


def test_sigkill_mid_import_then_restart_equals_uninterrupted(
    server: ServerFactory, tmp_path: Path
) -> None:
    rows = 200_000
    srv = server(workers=2, **KNOBS)
    cli = Cli(srv, tmp_path / "cfg")
    cli.login("hal")
    token = cli.token()
    path = tmp_path / "big.csv"
    gen_csv(cli, path, rows, seed=3)
    task_id = int(cli.ok("import", str(path), "--dataset", "big").strip())
    with srv.client(token) as api:
        wait_progress(api, task_id, 20_000, timeout=60)
    srv.kill()
    [(status, checkpoint)] = query(
        srv, "SELECT status, checkpoint FROM tether_task WHERE id = ?", task_id
    )
    assert status == "running", "kill the server while the import runs"
    assert '"loaded"' in checkpoint
    assert query(srv, "SELECT COUNT(*) FROM tether_dataset") == [(0,)]  # nothing published

    srv.start()  # a new port: the stored token was issued for the old one
    with srv.client(token) as api:
        task = wait_for(api, task_id, FINAL, timeout=180)
        assert task["status"] == "succeeded", task
        assert task["result"]["rows"] == rows
        assert (task["attempts"], task["recoveries"]) == (1, 1)  # the kill used no attempt
        reasons = [e["reason"] for e in events(api, task_id)]
        assert any(r.startswith("recovered after a server restart (1 of 10)") for r in reasons)
    big = table_rows(srv, "big")
    assert [r[0] for r in big] == list(range(1, rows + 1))  # _rid: no gap, none twice
    assert [r[1] for r in big] == list(range(1, rows + 1))  # the id column, in file order

    # an uninterrupted import of the same file gives the same table
    r = cli.run(
        "import", str(path), "--dataset", "reference", "--watch", timeout=240, TETHER_TOKEN=token
    )
    assert r.returncode == 0, r
    assert table_rows(srv, "reference") == big
    assert not list((srv.home / "uploads").iterdir())
    assert {t for t in dataset_tables(srv) if t.startswith("tstg_")} == set()


def test_cancel_midway_leaves_no_trace(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(workers=1, **KNOBS)
    cli = Cli(srv, tmp_path / "cfg")
    cli.login("ivy")
    path = tmp_path / "big.csv"
    gen_csv(cli, path, 100_000, seed=4)
    assert dataset_tables(srv) == set()
    task_id = int(cli.ok("import", str(path), "--dataset", "half").strip())
    with srv.client(cli.token()) as api:
        wait_progress(api, task_id, 10_000, timeout=60)
        assert any(t.startswith("tstg_") for t in dataset_tables(srv))  # the staging table
        out = cli.ok("cancel", str(task_id)).strip()
        assert out in (f"task {task_id}: cancelling", f"task {task_id}: cancelled"), out
        task = wait_for(api, task_id, FINAL, timeout=60)
        assert task["status"] == "cancelled", task
        assert get_task(api, task_id)["result"] is None
        assert api.get("/datasets/half").status_code == 404
    assert cli.json("datasets") == []
    assert dataset_tables(srv) == set()  # no staging table, no dataset table
    assert query(srv, "SELECT COUNT(*) FROM tether_upload") == [(0,)]
    assert not list((srv.home / "uploads").iterdir())


def test_import_refuses_a_file_that_is_not_text_before_uploading(
    server: ServerFactory, tmp_path: Path
) -> None:
    srv = server(workers=1)
    cli = Cli(srv, tmp_path / "cfg")
    cli.login("jo")
    packed = tmp_path / "orders.csv.gz"
    packed.write_bytes(gzip.compress(b"id,amount\n1,2.5\n"))
    noise = tmp_path / "noise.csv"
    noise.write_bytes(bytes(range(256)) * 64)
    for path, words in ((packed, "gzip-compressed"), (noise, "binary data")):
        r = cli.run("import", str(path), "--dataset", "orders")
        assert r.returncode == 2, r
        assert r.stderr.startswith(f"tether: {path} is not UTF-8 CSV text: "), r
        assert words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert query(srv, "SELECT COUNT(*) FROM tether_task") == [(0,)]  # nothing sent
    assert query(srv, "SELECT COUNT(*) FROM tether_upload") == [(0,)]
    uploads = srv.home / "uploads"
    assert not uploads.exists() or not list(uploads.iterdir())
