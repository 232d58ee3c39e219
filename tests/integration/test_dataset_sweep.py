"""The datasets sweep: what failures and crashes leave behind, and expired exports."""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.integration.conftest import dataset_tables
from tests.integration.test_datasets import upload, user
from tether import housekeeping, service
from tether.datasets import sql, sweep
from tether.datasets.files import data_dir, export_path
from tether.datasets.importer import retired_name
from tether.models import Task, Upload

HOUR = 3600


@pytest.fixture(autouse=True)
def _clean(transactional_db: None) -> Any:
    def clean() -> None:
        for kind in ("uploads", "exports"):
            shutil.rmtree(data_dir(kind), ignore_errors=True)
        for table in dataset_tables():
            sql.drop_table(table)

    clean()
    yield
    clean()


def _import_task(owner: Any, status: str) -> tuple[Task, Upload]:
    up = upload(owner, "a,b\n1,2\n")
    task = service.submit(owner, "csv_import", {"upload": up.public_id, "dataset": "d"})
    Task.objects.filter(pk=task.pk).update(status=status)
    return task, up


def _age(path: Any, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_staging_and_retired_tables_of_final_tasks_are_dropped() -> None:
    me = user()
    failed, _ = _import_task(me, "failed")
    running, _ = _import_task(me, "running")
    cols = [{"name": "a", "type": "integer"}]
    for t in (failed, running):
        sql.create_table(sql.staging_name(t.pk), cols)
        sql.create_table(retired_name(t.pk), cols)  # the table a replace replaced
    sql.create_table("tstg_999999", cols)  # its task is gone
    assert sorted(sweep.sweep_staging()) == sorted(
        [sql.staging_name(failed.pk), retired_name(failed.pk), "tstg_999999"]
    )
    assert dataset_tables() == {sql.staging_name(running.pk), retired_name(running.pk)}


def test_uploads_nothing_needs_are_removed_after_an_hour() -> None:
    me = user()
    _, done_up = _import_task(me, "failed")
    _, live_up = _import_task(me, "paused")
    _, fresh_up = _import_task(me, "failed")
    Upload.objects.filter(pk__in=[done_up.pk, live_up.pk]).update(
        created_at=timezone.now() - timedelta(hours=2)
    )
    orphan_old = data_dir("uploads") / "left-by-a-crash.csv"
    orphan_new = data_dir("uploads") / "being-uploaded.csv"
    orphan_old.write_bytes(b"a,b\n")
    orphan_new.write_bytes(b"a,b\n")
    _age(orphan_old, 2 * HOUR)
    removed = sweep.sweep_uploads()
    assert sorted(removed) == sorted([done_up.path, orphan_old.name])
    assert set(Upload.objects.values_list("pk", flat=True)) == {live_up.pk, fresh_up.pk}
    left = {p.name for p in data_dir("uploads").iterdir()}
    assert left == {live_up.path, fresh_up.path, orphan_new.name}


def test_exports_expire_and_partial_files_of_final_tasks_go(client_for: Any, settings: Any) -> None:
    client = client_for("exporter")
    me = client.user
    settings.TETHER = {**settings.TETHER, "EXPORT_TTL": 48 * HOUR}
    tasks = [service.submit(me, "csv_export", {"dataset": "x"}) for _ in range(4)]
    Task.objects.filter(pk__in=[t.pk for t in tasks[:2]]).update(status="succeeded")
    Task.objects.filter(pk=tasks[2].pk).update(status="failed")
    old, new, failed_part, running_part = (
        export_path(tasks[0].pk),
        export_path(tasks[1].pk),
        export_path(tasks[2].pk).with_name(f"export-{tasks[2].pk}.csv.part"),
        export_path(tasks[3].pk).with_name(f"export-{tasks[3].pk}.csv.part"),
    )
    for path in (old, new, failed_part, running_part):
        path.write_bytes(b"a\n1\n")
    _age(old, 72 * HOUR)
    assert sorted(sweep.sweep_exports()) == sorted([old.name, failed_part.name])
    assert {p.name for p in data_dir("exports").iterdir()} == {new.name, running_part.name}
    gone = client.get(f"/api/v1/tasks/{tasks[0].pk}/download")
    assert gone.status_code == 404
    assert "deleted 2 days after" in gone.json()["error"]["message"]
    kept = client.get(f"/api/v1/tasks/{tasks[1].pk}/download")
    assert kept.status_code == 200 and b"".join(kept.streaming_content) == b"a\n1\n"


def test_the_sweep_runs_from_the_maintenance_round() -> None:
    me = user()
    failed, _ = _import_task(me, "failed")
    sql.create_table(sql.staging_name(failed.pk), [{"name": "a", "type": "integer"}])
    for c in housekeeping._CHORES.values():
        c.due = 0.0
    assert "datasets.sweep" in housekeeping.run_due()
    assert not sql.table_exists(sql.staging_name(failed.pk))
    assert "datasets.sweep" not in housekeeping.run_due()  # not due again for a while


def test_the_upload_of_an_import_that_failed_otherwise_goes_at_the_next_sweep(
    executor: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import that fails on something other than its data keeps its upload; the
    first sweep once UPLOAD_GRACE_SECONDS have passed removes it (the sweep runs every
    10 minutes), not an hour later."""
    from tests.integration.test_datasets import run_import
    from tether.exceptions import TetherError

    class Lost(TetherError):
        code = "lost"

    def lost(*args: Any, **kwargs: Any) -> None:
        raise Lost("the database went away")

    me = user()
    _, live_up = _import_task(me, "paused")
    monkeypatch.setattr(sql, "create_table", lost)
    done = run_import(me, "a,b\n1,2\n", dataset="d")
    assert done.status == "failed" and "went away" in done.error, done.error
    left = Upload.objects.exclude(pk=live_up.pk).get()
    assert sweep.sweep_uploads() == []  # within the grace (a task may be on its way)
    later = time.time() + sweep.UPLOAD_GRACE_SECONDS + 1
    assert sweep.sweep_uploads(now=later) == [left.path]
    assert list(Upload.objects.values_list("pk", flat=True)) == [live_up.pk]
    assert {p.name for p in data_dir("uploads").iterdir()} == {live_up.path}
