"""CSV import and export through the embedded executor, on the test database (SQLite,
and PostgreSQL / MariaDB in the later runs of `make test`)."""

from __future__ import annotations

import csv
import io
import time
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.integration.conftest import dataset_tables, wait_status, wait_until
from tether import service
from tether.datasets import generate, sql
from tether.datasets.files import data_dir, export_path, new_upload_path
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Task, Upload

pytestmark = pytest.mark.usefixtures("datasets_cleaned")


def user(name: str = "importer") -> Any:
    return get_user_model().objects.get_or_create(username=name)[0]


def upload(owner: Any, text: str | bytes) -> Upload:
    path = new_upload_path()
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return Upload.objects.create(owner=owner, path=path.name, size=path.stat().st_size)


def run_import(owner: Any, text: str | bytes, **params: Any) -> Task:
    up = upload(owner, text)
    task = service.submit(owner, "csv_import", {"upload": up.public_id, **params})
    return wait_status(task.pk, "succeeded", "failed", timeout=60)


def rows_of(ds: Dataset) -> list[tuple[Any, ...]]:
    return list(sql.iter_rows(ds.table, ds.columns))


def await_checkpoint(task: Task, key: str, at_least: int = 1) -> None:
    """Until the task's checkpoint records ``key`` >= ``at_least`` (rows loaded by an
    import, rows written by an export)."""
    deadline = time.monotonic() + 20
    while int((Task.objects.get(pk=task.pk).checkpoint or {}).get(key, 0)) < at_least:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_import_infers_types_and_exports_back(executor: EmbeddedExecutor) -> None:
    buf = io.StringIO()
    generate.write(buf, 3000, seed=3)
    done = run_import(user(), buf.getvalue(), dataset="orders")
    assert done.status == "succeeded" and done.result is not None, done.error
    assert done.result["rows"] == 3000
    ds = Dataset.objects.get(name="orders")
    assert ds.row_count == 3000
    assert [c["type"] for c in ds.columns] == [
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
    assert not sql.table_exists(sql.staging_name(done.pk))
    assert not any(data_dir("uploads").iterdir())  # the upload is removed when done
    exp = service.submit(user(), "csv_export", {"dataset": "orders", "raw": True})
    finished = wait_status(exp.pk, "succeeded", "failed", timeout=60)
    assert finished.status == "succeeded", finished.error
    out = export_path(exp.pk).read_text()
    source = list(csv.reader(io.StringIO(buf.getvalue())))
    back = list(csv.reader(io.StringIO(out)))
    assert back[0] == source[0] and len(back) == len(source)
    for a, b in zip(source[1:50], back[1:50], strict=True):
        assert int(a[0]) == int(b[0]) and a[1] == b[1] and a[8] == b[8]
        assert float(a[3]) == float(b[3])
        assert (a[5] == "true") == (b[5] in ("true", "t"))


def test_bad_row_fails_naming_the_line_and_leaves_nothing(executor: EmbeddedExecutor) -> None:
    text = "id,amount\n1,2.5\n2,3.5\n3,abc\n4,1\n"
    done = run_import(
        user(),
        text,
        dataset="bad",
        columns=[{"name": "id", "type": "integer"}, {"name": "amount", "type": "float"}],
    )
    assert done.status == "failed"
    assert "line 4" in done.error and "abc" in done.error
    assert not Dataset.objects.filter(name="bad").exists()
    assert not sql.table_exists(sql.staging_name(done.pk))


def test_skip_mode_reports_skipped_lines(executor: EmbeddedExecutor) -> None:
    text = "id,amount\n1,2.5\n2,x\n3\n4,1\n"
    done = run_import(
        user(),
        text,
        dataset="skippy",
        on_error="skip",
        columns=[{"name": "id", "type": "integer"}, {"name": "amount", "type": "float"}],
    )
    assert done.status == "succeeded" and done.result is not None, done.error
    assert done.result["rows"] == 2 and done.result["skipped_count"] == 2
    assert [s["line"] for s in done.result["skipped_lines"]] == [3, 4]


def test_append_and_replace(executor: EmbeddedExecutor) -> None:
    me = user()
    assert run_import(me, "a,b\n1,x\n", dataset="d").status == "succeeded"
    assert run_import(me, "a,b\n2,y\n", dataset="d", mode="append").status == "succeeded"
    ds = Dataset.objects.get(name="d")
    assert rows_of(ds) == [(1, "x"), (2, "y")] and ds.row_count == 2
    again = run_import(me, "a,b\n3,z\n", dataset="d")
    assert again.status == "failed" and "exists already" in again.error
    assert run_import(me, "c\n9\n", dataset="d", mode="replace").status == "succeeded"
    ds.refresh_from_db()
    assert rows_of(ds) == [(9,)] and ds.columns == [{"name": "c", "type": "integer"}]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"", "empty"),
        (b"\n\r\n\n", "empty"),
        (b"\xff\xfe\x00binary\x00garbage", "not UTF-8"),
        (b'a,b\n1,"unterminated\n', "not valid CSV"),
        (b"bad;name,b\n1,2\n", "not allowed"),
    ],
)
def test_bad_files_fail_clearly(executor: EmbeddedExecutor, text: bytes, reason: str) -> None:
    done = run_import(user(), text, dataset="x")
    assert done.status == "failed" and reason in done.error, done.error
    assert not Dataset.objects.exists()


def test_bom_quoted_newlines_header_only_and_big_field(
    executor: EmbeddedExecutor, settings: Any
) -> None:
    settings.TETHER = {**settings.TETHER, "CSV_MAX_FIELD_BYTES": 16 << 20}
    me = user()
    big = "x" * (10 * 1024 * 1024)
    text = '\ufeffid,note\n1,"line one\nline two"\n2,' + big + "\n"
    done = run_import(me, text, dataset="bom")
    assert done.status == "succeeded", done.error
    ds = Dataset.objects.get(name="bom")
    assert ds.columns[0]["name"] == "id"
    assert rows_of(ds) == [(1, "line one\nline two"), (2, big)]
    head = run_import(me, "a,b\n", dataset="empty")
    assert head.status == "succeeded" and head.result is not None and head.result["rows"] == 0
    blank = run_import(me, "\n\nid,x\n1,2\n\n3,4\n", dataset="blank")  # skipped
    assert blank.status == "succeeded", blank.error
    assert rows_of(Dataset.objects.get(name="blank")) == [(1, 2), (3, 4)]


@pytest.mark.parametrize(
    ("cell", "header"),
    [
        ("x" * ((1 << 20) + 1), True),
        ("x" * ((1 << 20) + 1), False),
        ('"' + "y,\n" * (1 << 19) + '"', True),  # quoted, over many lines
    ],
)
def test_a_field_over_the_limit_fails_naming_its_line(
    executor: EmbeddedExecutor, cell: str, header: bool
) -> None:
    """TETHER_CSV_MAX_FIELD_BYTES (default 1 MiB): one byte more fails the import on
    every load path, and nothing is left behind; a field of exactly 1 MiB is fine."""
    me = user()
    rows = "".join(f"{i},v{i}\n" for i in range(1, 3000))  # past the planning sample
    text = ("id,note\n" if header else "") + rows + "3000," + cell + "\n3001,z\n"
    done = run_import(me, text, dataset="big", header=header)
    line = 3000 + header
    assert done.status == "failed" and f"line {line}: field larger than 1 MiB" in done.error
    assert not Dataset.objects.exists() and dataset_tables() == set()
    assert not any(data_dir("uploads").iterdir())
    fits = run_import(me, "id,note\n1," + "x" * (1 << 20) + "\n", dataset="fits")
    assert fits.status == "succeeded", fits.error


def _start_import(
    monkeypatch: pytest.MonkeyPatch, dataset: str, *, batch_rows: int, seed: int
) -> tuple[Task, Upload]:
    """Submit an import of 20,000 generated rows loaded in small batches (so that it
    can be caught midway)."""
    from tether.datasets import loader

    monkeypatch.setattr(loader, "BATCH_ROWS", batch_rows)
    buf = io.StringIO()
    generate.write(buf, 20_000, seed=seed)
    me = user()
    up = upload(me, buf.getvalue())
    return service.submit(me, "csv_import", {"upload": up.public_id, "dataset": dataset}), up


def test_pause_resume_equals_uninterrupted(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    task, _ = _start_import(monkeypatch, "paused", batch_rows=200, seed=5)
    for _ in range(3):
        await_checkpoint(task, "loaded")
        try:
            service.pause(task.pk, actor="test")
        except Exception:
            break  # finished already
        if wait_status(task.pk, "paused", "succeeded").status == "succeeded":
            break
        assert not Dataset.objects.filter(name="paused").exists()  # nothing visible yet
        service.resume(task.pk, actor="test")
    done = wait_status(task.pk, "succeeded", timeout=60)
    ds = Dataset.objects.get(name="paused")
    assert [r[0] for r in rows_of(ds)] == list(range(1, 20_001))  # none lost, none twice
    assert done.result is not None and done.result["rows"] == 20_000


def test_rapid_pause_resume_keeps_the_rows_loaded(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches far longer than the time between pauses: each pause commits the rows its
    batch loaded so far with their checkpoint, so every pause/resume pair moves the
    import forward, and the table is exact in the end (none lost, none twice). The
    test hands the loader its blocks of CSV one permit at a time, so that each pause
    lands after two blocks of a batch whatever the machine's speed."""
    import threading

    from tether.datasets import files, loader

    for name, value in (("BATCH_SECONDS", 600.0), ("PREPARED_SECONDS", 600.0)):
        monkeypatch.setattr(loader, name, value)
    monkeypatch.setattr(loader, "PREPARED_ROWS", 10**9)
    monkeypatch.setattr(loader, "SAVE_WAIT_SECONDS", 60.0)  # (however busy the machine)
    monkeypatch.setattr(loader, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(loader, "ROW_BLOCK_BYTES", 4096)
    permits = threading.Semaphore(0)
    taken = [0]
    real_block = files.Source.block

    def gated(self: files.Source, size: int) -> bytes:
        assert permits.acquire(timeout=60)
        block = real_block(self, size)
        taken[0] += 1
        return block

    monkeypatch.setattr(files.Source, "block", gated)
    task, _ = _start_import(monkeypatch, "rapid", batch_rows=10**9, seed=8)
    loaded = [0]

    def blocks_taken(n: int) -> bool:
        return taken[0] >= n

    try:
        for _ in range(15):
            since = taken[0]
            permits.release(2)
            # one block loaded, the next one taken
            wait_until(partial(blocks_taken, since + 2), "the blocks to load", 30)
            service.pause(task.pk, actor="test")
            permits.release()  # (should the loader wait for a block meanwhile)
            assert wait_status(task.pk, "paused", timeout=30).status == "paused"
            loaded.append(int((Task.objects.get(pk=task.pk).checkpoint or {})["loaded"]))
            assert loaded[-1] > loaded[-2], loaded  # saved, not thrown away
            service.resume(task.pk, actor="test")
    finally:
        permits.release(10**6)
    done = wait_status(task.pk, "succeeded", timeout=120)
    ds = Dataset.objects.get(name="rapid")
    assert [r[0] for r in rows_of(ds)] == list(range(1, 20_001))
    assert (done.result or {})["rows"] == 20_000


def test_cancel_leaves_no_trace(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = dataset_tables()
    task, up = _start_import(monkeypatch, "gone", batch_rows=100, seed=6)
    await_checkpoint(task, "loaded")
    service.cancel(task.pk, actor="test")
    assert wait_status(task.pk, "cancelled", "succeeded").status == "cancelled"
    assert not Dataset.objects.filter(name="gone").exists()
    assert not sql.table_exists(sql.staging_name(task.pk))
    assert not Path(data_dir("uploads") / up.path).exists()
    assert dataset_tables() == before


def _slow_pages(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Exports write pages of ``rows`` rows, checkpoint after each, and take a little
    time per page (so a pause or cancel lands mid-export)."""
    from tether.datasets import exporter

    monkeypatch.setattr(exporter, "PAGE_ROWS", rows)
    monkeypatch.setattr(exporter, "SELECT_PAGE_ROWS", rows)
    monkeypatch.setattr(exporter, "SYNC_SECONDS", 0.0)
    page = sql.export_page

    def slow_page(*args: Any, **kwargs: Any) -> tuple[int, int]:
        time.sleep(0.01)
        return page(*args, **kwargs)

    monkeypatch.setattr(sql, "export_page", slow_page)


def _generated_dataset(owner: Any, name: str, rows: int, seed: int) -> str:
    """Import ``rows`` rows of ``tether gen-csv`` data as dataset ``name``; the CSV text."""
    buf = io.StringIO()
    generate.write(buf, rows, seed=seed)
    done = run_import(owner, buf.getvalue(), dataset=name)
    assert done.status == "succeeded", done.error
    return buf.getvalue()


def test_export_pause_resume_equals_uninterrupted(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = user()
    _generated_dataset(me, "big", 5000, seed=7)
    whole = service.submit(me, "csv_export", {"dataset": "big"})
    assert wait_status(whole.pk, "succeeded", "failed", timeout=60).status == "succeeded"
    expected = export_path(whole.pk).read_bytes()

    _slow_pages(monkeypatch, 100)
    task = service.submit(me, "csv_export", {"dataset": "big"})
    pauses = 0
    for _ in range(3):
        await_checkpoint(task, "rows", 100 * (pauses + 1))
        service.pause(task.pk, actor="test")
        if wait_status(task.pk, "paused", "succeeded").status == "succeeded":
            break
        pauses += 1
        assert not export_path(task.pk).exists()  # the file appears only when complete
        service.resume(task.pk, actor="test")
    done = wait_status(task.pk, "succeeded", "failed", timeout=60)
    assert done.status == "succeeded", done.error
    assert pauses >= 1
    assert export_path(task.pk).read_bytes() == expected  # no row lost or written twice
    assert done.result is not None and done.result["rows"] == 5000
    assert not export_path(task.pk).with_suffix(".csv.part").exists()


def test_export_cancel_deletes_the_partial_file(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = user()
    _generated_dataset(me, "half", 3000, seed=8)
    _slow_pages(monkeypatch, 100)
    task = service.submit(me, "csv_export", {"dataset": "half"})
    await_checkpoint(task, "rows", 200)
    part = export_path(task.pk).with_name(export_path(task.pk).name + ".part")
    assert part.exists()
    service.cancel(task.pk, actor="test")
    assert wait_status(task.pk, "cancelled", "succeeded").status == "cancelled"
    assert not part.exists() and not export_path(task.pk).exists()
    assert not any(data_dir("exports").iterdir())


def test_zoned_timestamps_filter_by_utc_day(executor: EmbeddedExecutor) -> None:
    """The same file gives the same date-range export on every database: zoned
    timestamps are stored in UTC (23:30 at -02:00 is 01:30 UTC the next day)."""
    me = user()
    text = (
        "id,at\n1,2024-02-29T23:30:00-02:00\n2,2024-02-29T12:00:00+00:00\n"
        "3,2024-03-01T00:15:00+05:30\n4,2024-03-01T23:59:59Z\n"
    )
    assert run_import(me, text, dataset="zoned").status == "succeeded"
    exp = service.submit(
        me,
        "csv_export",
        {
            "dataset": "zoned",
            "date_column": "at",
            "from_date": "2024-03-01",
            "to_date": "2024-03-01",
        },
    )
    done = wait_status(exp.pk, "succeeded", "failed", timeout=60)
    assert done.status == "succeeded", done.error
    back = list(csv.reader(io.StringIO(export_path(exp.pk).read_text())))
    assert [r[0] for r in back[1:]] == ["1", "4"]
    first = back[1][1].replace(" ", "T")
    assert first.startswith("2024-03-01T01:30:00") and first.endswith(("+00:00", "+00"))


def _normalised(row: list[str], kinds: list[str]) -> tuple[Any, ...]:
    """A CSV row's cells as values of their column types (as an export may spell them
    differently: t/true, 2024-01-01 10:00:00+00 / 2024-01-01T10:00:00Z)."""
    out: list[Any] = []
    for cell, kind in zip(row, kinds, strict=True):
        if cell == "":
            out.append(None)
        elif kind == "integer":
            out.append(int(cell))
        elif kind == "float":
            out.append(float(cell))
        elif kind == "boolean":
            out.append(cell in ("true", "t"))
        elif kind == "timestamptz":
            out.append(datetime.fromisoformat(cell.replace(" ", "T")))
        elif kind == "date":
            out.append(date.fromisoformat(cell))
        else:
            out.append(cell)
    return tuple(out)


def test_round_trip_export_equals_the_input(executor: EmbeddedExecutor) -> None:
    """Every row and cell of an exported import equals the source file's, after type
    normalisation (quoted newlines, commas, quotes, non-ASCII text, nulls)."""
    me = user()
    text = _generated_dataset(me, "trip", 4000, seed=11)
    kinds = [c["type"] for c in Dataset.objects.get(name="trip").columns]
    exp = service.submit(me, "csv_export", {"dataset": "trip", "raw": True})
    assert wait_status(exp.pk, "succeeded", "failed", timeout=60).status == "succeeded"
    source = list(csv.reader(io.StringIO(text)))
    back = list(csv.reader(io.StringIO(export_path(exp.pk).read_text(), newline="")))
    assert back[0] == source[0]
    assert [_normalised(r, kinds) for r in back[1:]] == [_normalised(r, kinds) for r in source[1:]]


@pytest.mark.parametrize("mode", ["create", "append", "replace"])
def test_cancel_right_after_the_publish_undoes_it(
    executor: EmbeddedExecutor, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A cancel that comes after the import was published, before its success was
    recorded: the rollback undoes the publish and the dataset is exactly as before."""
    from tether.datasets import importer

    me = user()
    if mode != "create":
        assert run_import(me, "id,name\n1,a\n2,b\n", dataset="kept").status == "succeeded"
    ds = Dataset.objects.filter(name="kept").first()
    before = (
        (rows_of(ds), ds.columns, ds.row_count, ds.table, ds.last_import_task_id, ds.last_import_at)
        if ds
        else None
    )
    tables = dataset_tables()
    discard = importer._discard_upload

    def cancel_then_discard(ctx: Any, ref: str) -> None:  # just after the publish commit
        task = Task.objects.filter(type="csv_import", status="running").first()
        if task is not None:  # (not again from the rollback)
            service.cancel(task.pk, actor="test")
        discard(ctx, ref)

    monkeypatch.setattr(importer, "_discard_upload", cancel_then_discard)
    text = "id,name\n3,c\n4,d\n5,e\n" if mode == "append" else "id,label,n\n9,z,1\n"
    task = service.submit(
        me, "csv_import", {"upload": upload(me, text).public_id, "dataset": "kept", "mode": mode}
    )
    done = wait_status(task.pk, "cancelled", "failed", "succeeded")
    assert done.status == "cancelled", done.error
    ds = Dataset.objects.filter(name="kept").first()
    after = (
        (rows_of(ds), ds.columns, ds.row_count, ds.table, ds.last_import_task_id, ds.last_import_at)
        if ds
        else None
    )
    assert after == before
    assert dataset_tables() == tables  # no staging, no retired, no new table left


def test_undoing_a_publish_twice_is_harmless(executor: EmbeddedExecutor) -> None:
    """A rollback resumed after a crash undoes the publish again: no error, same result."""
    from tether.datasets import importer

    me = user()
    assert run_import(me, "id\n1\n2\n", dataset="twice").status == "succeeded"
    first = Dataset.objects.get(name="twice")
    done = run_import(me, "id\n7\n", dataset="twice", mode="replace")
    assert done.status == "succeeded" and rows_of(Dataset.objects.get(name="twice")) == [(7,)]
    state = Task.objects.get(pk=done.pk).checkpoint
    assert state is not None
    for _ in range(2):
        importer._unpublish(state)
    ds = Dataset.objects.get(name="twice")
    assert ds.table == first.table and rows_of(ds) == [(1,), (2,)]
