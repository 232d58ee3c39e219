"""Uploads over the REST API: they belong to their owner (internal task types are not
submittable, imports and the sweep touch only the owner's uploads, upload ids are
random, export downloads are per user for staff too), and they are checked when they
arrive (not text, columns of an append matched by name)."""

from __future__ import annotations

import csv
import gzip
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from tests.integration.conftest import wait_status
from tests.integration.test_datasets import upload as stored_upload
from tests.integration.test_datasets_api import (
    API,
    Client,
    err,
    exported,
    imported,
    nothing_created,
    upload,
    uploads_left,
)
from tether import service
from tether.datasets import generate, sql, sweep
from tether.datasets.files import data_dir, export_path
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Task, Upload

pytestmark = pytest.mark.usefixtures("datasets_cleaned")


def still_there(up: Upload) -> bool:
    return Upload.objects.filter(pk=up.pk).exists() and (data_dir("uploads") / up.path).exists()


# -- uploads belong to their owner ----------------------------------------------------


def test_internal_task_types_cannot_be_submitted(client_for: Client) -> None:
    alice, bob = client_for("alice"), client_for("bob")
    pending = stored_upload(alice.user, "a,b\n1,2\n")  # type: ignore[attr-defined]
    for params in (
        {"upload": pending.public_id, "dataset": "x"},
        {"upload": pending.pk, "dataset": "x"},
    ):
        for client in (bob, alice):  # not even the upload's owner
            r = client.post(f"{API}/tasks", {"type": "csv_import", "params": params}, format="json")
            e = err(r, 400)
            assert e["code"] == "internal_task_type", e
            assert "POST /api/v1/datasets/import" in e["message"], e
    r = bob.post(f"{API}/tasks", {"type": "csv_export", "params": {"dataset": "x"}}, format="json")
    assert err(r, 400)["code"] == "internal_task_type"
    assert not Task.objects.exists()
    assert still_there(pending)
    names = {t["name"] for t in bob.get(f"{API}/task-types").json()}
    assert "add" in names and not names & {"csv_import", "csv_export"}
    e = err(bob.post(f"{API}/tasks", {"type": "nope"}, format="json"), 400)
    assert e["code"] == "unknown_task_type" and "csv_import" not in e["message"]


def test_an_import_never_touches_another_users_upload(client_for: Client) -> None:
    """Below the API too: an import naming an upload its owner does not own fails
    without reading or deleting it (also by pk, as tasks queued before public ids do)."""
    alice, bob = client_for("alice").user, client_for("bob").user  # type: ignore[attr-defined]
    pending = stored_upload(alice, "a,b\n1,2\n")
    by_id = service.submit(bob, "csv_import", {"upload": pending.public_id, "dataset": "x"})
    by_pk = service.submit(bob, "csv_import", {"upload": pending.public_id, "dataset": "y"})
    Task.objects.filter(pk=by_pk.pk).update(params={**by_pk.params, "upload": pending.pk})
    ex = EmbeddedExecutor(2, poll_interval=0.05, maintenance_interval=0.1)
    ex.start()
    try:
        for task in (by_id, by_pk):
            done = wait_status(task.pk, "succeeded", "failed", timeout=60)
            assert done.status == "failed" and "no upload" in done.error, done.error
    finally:
        ex.stop(timeout=5)
    assert still_there(pending)
    assert not Dataset.objects.exists()


def test_the_sweep_keeps_an_upload_only_for_its_owners_import(make_user: Any) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    wanted, named_by_bob = stored_upload(alice, "a\n1\n"), stored_upload(alice, "a\n2\n")
    for owner, up in ((alice, wanted), (bob, named_by_bob)):
        task = service.submit(owner, "csv_import", {"upload": up.public_id, "dataset": "d"})
        Task.objects.filter(pk=task.pk).update(status="paused")
    Upload.objects.update(created_at=timezone.now() - timedelta(hours=2))
    assert sweep.sweep_uploads() == [named_by_bob.path]
    assert still_there(wanted) and not still_there(named_by_bob)


def test_upload_ids_are_random(client_for: Client) -> None:
    c = client_for("alice")
    ids = []
    for i in range(3):
        r = upload(c, "a\n1\n", dataset=f"d{i}")
        assert r.status_code == 201, r.content
        ids.append(r.json()["params"]["upload"])
    assert all(isinstance(i, str) and re.fullmatch("[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == 3
    assert set(Upload.objects.values_list("public_id", flat=True)) == set(ids)


def test_staff_cannot_download_another_users_export(
    client_for: Client, executor: EmbeddedExecutor
) -> None:
    alice, boss = client_for("alice"), client_for("boss", staff=True)
    imported(alice, "a\n1\n", dataset="mine")
    export = exported(alice, "mine")
    e = err(boss.get(f"{API}/tasks/{export.pk}/download"), 404)
    assert e["code"] == "not_found"
    assert boss.get(f"{API}/tasks/{export.pk}").status_code == 200  # staff see the task
    r = alice.get(f"{API}/tasks/{export.pk}/download")
    assert r.status_code == 200 and r.streaming
    assert r.getvalue() == export_path(export.pk).read_bytes()
    r.close()
    imported(boss, "b\n2\n", dataset="theirs")
    own = exported(boss, "theirs")
    r = boss.get(f"{API}/tasks/{own.pk}/download")
    assert r.status_code == 200
    r.close()


# -- appends match columns by name ----------------------------------------------------


def test_append_maps_columns_by_name(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    buf = io.StringIO()
    generate.write(buf, 1500, seed=21)
    source = list(csv.reader(io.StringIO(buf.getvalue())))
    header, rows = source[0], source[1:]

    def text(names: list[str], part: list[list[str]]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        idx = [header.index(n) for n in names]
        writer.writerows([[row[i] for i in idx] for row in part])
        return out.getvalue()

    imported(c, buf.getvalue(), dataset="whole")
    imported(c, text(header, rows[:1000]), dataset="parts")
    task = imported(c, text(header[::-1], rows[1000:]), dataset="parts", mode="append")
    whole, parts = Dataset.objects.get(name="whole"), Dataset.objects.get(name="parts")
    assert task.result is not None
    assert parts.columns == whole.columns and task.result["columns"] == whole.columns
    assert parts.row_count == 1500
    assert list(sql.iter_rows(parts.table, parts.columns)) == list(
        sql.iter_rows(whole.table, whole.columns)
    )

    imported(c, "a,b,c\n1,x,10\n", dataset="d")
    imported(c, "c,b,a\n20,y,2\n", dataset="d", mode="append")
    declared = (
        '[{"name": "c", "type": "integer"}, {"name": "b", "type": "text"}, '
        '{"name": "a", "type": "integer"}]'
    )
    imported(c, "30,z,3\n", dataset="d", mode="append", header="false", columns=declared)
    imported(c, "4,w,40\n", dataset="d", mode="append", header="false")  # no names: in order
    rows_d = c.get(f"{API}/datasets/d/rows").json()["rows"]
    assert rows_d == [[1, "x", 10], [2, "y", 20], [3, "z", 30], [4, "w", 40]]


ABC = "a,b,c\n1,x,10\n"


@pytest.mark.parametrize(
    ("dataset", "text", "form", "words"),
    [
        (ABC, "a,b\n1,x\n", {}, ["missing c"]),
        (ABC, "a,b,c,d\n1,x,2,3\n", {}, ["not in the dataset: d"]),
        (ABC, "a,b,x\n1,y,2\n", {}, ["missing c", "not in the dataset: x"]),
        ("x,y\n1,2\n", "a,b\n3,4\n", {}, ["missing x, y", "not in the dataset: a, b"]),
        (ABC, "1,x\n", {"header": "false"}, ["the file has 2 columns", "has 3 (a, b, c)"]),
        (
            ABC,
            "a,b,c\n1,x,2\n",
            {
                "columns": '[{"name": "a", "type": "integer"}, {"name": "b", "type": "text"},'
                ' {"name": "c", "type": "text"}]'
            },
            ["'c' is declared text but is integer"],
        ),
    ],
    ids=["missing", "extra", "unknown", "other-names", "no-header-width", "declared-type"],
)
def test_an_append_with_other_columns_is_refused_at_upload(
    client_for: Client,
    executor: EmbeddedExecutor,
    dataset: str,
    text: str,
    form: dict[str, str],
    words: list[str],
) -> None:
    c = client_for("alice")
    imported(c, dataset, dataset="d")
    tasks = Task.objects.count()
    e = err(upload(c, text, dataset="d", mode="append", **form), 400)
    assert e["code"] == "columns_mismatch", e
    assert all(w in e["message"] for w in words), e["message"]
    assert Task.objects.count() == tasks  # no task
    assert uploads_left() == [] and not Upload.objects.exists()
    assert c.get(f"{API}/datasets/d").json()["row_count"] == 1


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (gzip.compress(b"a,b\n1,2\n"), "gzip-compressed"),
        (bytes(range(256)) * 8, "binary data"),
        (b"a,b\n1,2\n\x00\x01\x02", "binary data"),
        ("a,b\ncafé,1\n".encode("latin-1"), "byte 0xe9 at offset 7 is not UTF-8"),
        ("a,b\n1,2\n".encode("utf-16"), "UTF-16"),
        (b"PK\x03\x04\x14\x00\x06\x00" + b"x" * 100, "xlsx"),
    ],
    ids=["gzip", "bytes", "nul", "latin-1", "utf-16", "xlsx"],
)
def test_a_file_that_is_not_text_is_refused_at_upload(
    client_for: Client, content: bytes, words: str
) -> None:
    c = client_for("alice")
    e = err(upload(c, content, dataset="d"), 400)
    assert e["code"] == "not_text" and words in e["message"], e
    nothing_created()


def test_a_bad_header_is_refused_at_upload(client_for: Client) -> None:
    c = client_for("alice")
    e = err(upload(c, "bad;name,b\n1,2\n", dataset="d"), 400)
    assert e["code"] == "bad_data" and "line 1 (header)" in e["message"], e
    e = err(upload(c, "\n\n", dataset="d"), 400)
    assert "empty" in e["message"], e
    nothing_created()
    # text after the first block is the import's business: a long UTF-8 file whose
    # first 64 KiB cut a character in two is accepted
    r = upload(c, "a\n" + "x" * (64 * 1024 - 3) + "é\n", dataset="cut")
    assert r.status_code == 201, r.content
