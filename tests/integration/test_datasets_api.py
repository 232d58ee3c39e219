"""Datasets over the REST API in-process: upload (streamed to disk, size limit), the
datasets list/show/preview/delete, export and download, tenancy and bad input."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from tests.integration.conftest import wait_status
from tether import service
from tether.datasets import generate, sql
from tether.datasets.files import data_dir, export_path
from tether.exceptions import ServiceUnavailable
from tether.executors.embedded import EmbeddedExecutor
from tether.models import Dataset, Task, Upload

API = "/api/v1"
Client = Callable[..., APIClient]
SAMPLE = (
    "id,name,amount,paid,day,at\n"
    "1,Ann,1.5,true,2024-01-02,2024-01-02T10:00:00Z\n"
    '2,"Bo, Jr",NA,false,2024-02-03,2024-02-03T11:30:00Z\n'
    "3,=cmd,-2,yes,2024-03-04,2024-03-04T00:00:00Z\n"
    '4,"two\nlines",1e3,no,,2024-04-05T23:59:59Z\n'
)

pytestmark = pytest.mark.usefixtures("datasets_cleaned")


def err(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, getattr(resp, "content", b""))
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


def csv_file(content: str | bytes, name: str = "data.csv") -> io.BytesIO:
    f = io.BytesIO(content.encode() if isinstance(content, str) else content)
    f.name = name
    return f


def upload(client: APIClient, content: str | bytes = SAMPLE, **form: Any) -> Any:
    form.setdefault("dataset", "sample")
    return client.post(
        f"{API}/datasets/import", {**form, "file": csv_file(content)}, format="multipart"
    )


def imported(client: APIClient, content: str | bytes = SAMPLE, **form: Any) -> Task:
    r = upload(client, content, **form)
    assert r.status_code == 201, r.content
    task = wait_status(r.json()["id"], "succeeded", "failed", timeout=60)
    assert task.status == "succeeded", task.error
    return task


def exported(client: APIClient, name: str, **body: Any) -> Task:
    r = client.post(f"{API}/datasets/{name}/export", body, format="json")
    assert r.status_code == 201, r.content
    task = wait_status(r.json()["id"], "succeeded", "failed", timeout=60)
    assert task.status == "succeeded", task.error
    return task


def uploads_left() -> list[str]:
    return sorted(p.name for p in data_dir("uploads").iterdir())


def nothing_created() -> None:
    assert uploads_left() == []
    assert not Upload.objects.exists()
    assert not Task.objects.filter(type="csv_import").exists()
    assert not Dataset.objects.exists()


def test_upload_import_list_show_and_preview(
    client_for: Client, executor: EmbeddedExecutor
) -> None:
    c = client_for("alice")
    r = upload(c, dataset="sample")
    assert r.status_code == 201, r.content
    body = r.json()
    assert body["type"] == "csv_import" and body["status"] in ("queued", "running")
    assert body["params"]["dataset"] == "sample" and body["params"]["mode"] == "create"
    up = Upload.objects.get(public_id=body["params"]["upload"])
    assert up.original_name == "data.csv" and up.size == len(SAMPLE.encode())
    task = wait_status(body["id"], "succeeded", "failed", timeout=30)
    assert task.status == "succeeded", task.error
    assert uploads_left() == [] and not Upload.objects.exists()  # removed once imported

    listed = c.get(f"{API}/datasets").json()
    assert [d["name"] for d in listed] == ["sample"]
    ds = listed[0]
    assert ds["row_count"] == 4 and ds["last_import_task"] == task.pk
    assert ds["created_at"] and ds["last_import_at"]
    assert ds["columns"] == [
        {"name": "id", "type": "integer"},
        {"name": "name", "type": "text"},
        {"name": "amount", "type": "float"},
        {"name": "paid", "type": "boolean"},
        {"name": "day", "type": "date"},
        {"name": "at", "type": "timestamptz"},
    ]
    assert c.get(f"{API}/datasets/sample").json() == ds

    page = c.get(f"{API}/datasets/sample/rows").json()
    assert page["offset"] == 0 and page["limit"] == 100 and page["row_count"] == 4
    assert page["columns"] == ds["columns"]
    assert page["rows"][0] == [1, "Ann", 1.5, True, "2024-01-02", "2024-01-02T10:00:00+00:00"]
    assert page["rows"][1][:5] == [2, "Bo, Jr", None, False, "2024-02-03"]
    assert page["rows"][3][1] == "two\nlines" and page["rows"][3][4] is None
    assert page["rows"][3][2] == 1000.0
    tail = c.get(f"{API}/datasets/sample/rows?limit=2&offset=2").json()["rows"]
    assert [r[0] for r in tail] == [3, 4]
    assert c.get(f"{API}/datasets/sample/rows?offset=10").json()["rows"] == []
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=x"):
        err(c.get(f"{API}/datasets/sample/rows?{query}"), 400)


def test_preview_pages_a_bigger_dataset(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    buf = io.StringIO()
    generate.write(buf, 2500, seed=11)
    imported(c, buf.getvalue(), dataset="orders")
    seen: list[int] = []
    for offset in range(0, 2500, 1000):
        rows = c.get(f"{API}/datasets/orders/rows?limit=1000&offset={offset}").json()["rows"]
        seen.extend(r[0] for r in rows)
    assert seen == list(range(1, 2501))


def test_preview_cuts_long_cells_and_bounds_the_page(
    client_for: Client, executor: EmbeddedExecutor, settings: Any
) -> None:
    """Whatever the cells hold, a preview page stays small: text cells over 1,000
    characters end in "…", a page stops at about 1 MiB (``truncated``), and paging on
    from ``offset + len(rows)`` reaches every row."""
    settings.TETHER = {**settings.TETHER, "CSV_MAX_FIELD_BYTES": 4 << 20}
    c = client_for("alice")
    huge = "h" * (3 << 20)
    lines = ["id,a,b,c", f"1,{huge},x,y"]
    lines += [f"{i}," + ",".join(f"{col}{i:04d}" * 400 for col in "abc") for i in range(2, 401)]
    imported(c, "\n".join(lines) + "\n", dataset="wide")
    r = c.get(f"{API}/datasets/wide/rows?limit=1000")
    assert len(r.content) < (1 << 20) + (64 << 10), len(r.content)
    page = r.json()
    assert page["truncated"] is True and 100 < len(page["rows"]) < 400
    assert page["rows"][0] == [1, "h" * 1000 + "…", "x", "y"]
    assert page["rows"][1][1] == ("a0002" * 400)[:1000] + "…"
    seen = [row[0] for row in page["rows"]]
    while True:
        more = c.get(f"{API}/datasets/wide/rows?limit=1000&offset={len(seen)}").json()
        if not more["rows"]:
            break
        seen.extend(row[0] for row in more["rows"])
    assert seen == list(range(1, 401))
    small = c.get(f"{API}/datasets/wide/rows?limit=1&offset=399").json()
    assert small["truncated"] is True and len(small["rows"]) == 1


def test_upload_options(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    text = "1;x;-\n2;y;3\n3;z;oops\n"
    columns = (
        '[{"name": "n", "type": "integer"}, {"name": "s", "type": "text"}, '
        '{"name": "v", "type": "float"}]'
    )
    task = imported(
        c,
        text,
        dataset="opts",
        delimiter=";",
        header="false",
        null_values='["-"]',
        columns=columns,
        on_error="skip",
    )
    assert task.params["null_values"] == ["-"] and task.params["header"] is False
    assert task.result is not None
    assert task.result["rows"] == 2 and task.result["skipped_count"] == 1
    assert task.result["skipped_lines"][0]["line"] == 3
    rows = c.get(f"{API}/datasets/opts/rows").json()["rows"]
    assert rows == [[1, "x", None], [2, "y", 3.0]]

    tsv = imported(c, "a\tb\n1\t2\n", dataset="tabs", delimiter="tab", null_values="NA,NULL")
    assert tsv.params["delimiter"] == "\t" and tsv.params["null_values"] == ["NA", "NULL"]


def test_append_replace_and_conflicts(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    imported(c, "a,b\n1,x\n", dataset="d")
    e = err(upload(c, "a,b\n2,y\n", dataset="d"), 409)
    assert e["code"] == "dataset_exists" and "append" in e["message"]
    e = err(upload(c, "a,b\n2,y\n", dataset="nope", mode="append"), 404)
    assert e["code"] == "not_found"
    assert uploads_left() == [] and not Upload.objects.exists()
    imported(c, "a,b\n2,y\n", dataset="d", mode="append")
    assert c.get(f"{API}/datasets/d/rows").json()["rows"] == [[1, "x"], [2, "y"]]
    imported(c, "c\n9\n", dataset="d", mode="replace")
    ds = c.get(f"{API}/datasets/d").json()
    assert ds["row_count"] == 1 and ds["columns"] == [{"name": "c", "type": "integer"}]


@pytest.mark.parametrize(
    "name",
    [
        "../etc/passwd",
        "a/b",
        "x;DROP TABLE tether_task",
        "x y",
        "a'b",
        'a"b',
        "",
        "-x",
        "_x",
        "é",
        "a" * 65,
        "import",
        "tds_1\x00",
    ],
)
def test_bad_dataset_names_are_400_and_create_nothing(client_for: Client, name: str) -> None:
    c = client_for("alice")
    e = err(upload(c, dataset=name), 400)
    assert e["message"].startswith("dataset"), e
    nothing_created()


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"columns": "not json"}, "columns"),
        ({"columns": '{"name": "a"}'}, "columns"),
        ({"columns": '[{"name": "a", "type": "money"}]'}, "columns"),
        ({"columns": '[{"name": "a;b", "type": "text"}]'}, "columns"),
        ({"null_values": "[1, 2"}, "null_values"),
        ({"delimiter": '"'}, "delimiter"),
        ({"delimiter": ";;"}, "delimiter"),
        ({"mode": "upsert"}, "mode"),
        ({"on_error": "ignore"}, "on_error"),
        ({"header": "maybe"}, "header"),
    ],
)
def test_bad_form_fields_are_400(client_for: Client, form: dict[str, str], field: str) -> None:
    c = client_for("alice")
    e = err(upload(c, **form), 400)
    assert e["message"].startswith(field) and field in e["fields"], e
    nothing_created()


def test_missing_or_empty_file_and_wrong_content_type(client_for: Client) -> None:
    c = client_for("alice")
    e = err(c.post(f"{API}/datasets/import", {"dataset": "x"}, format="multipart"), 400)
    assert e["message"].startswith("file")
    e = err(upload(c, b""), 400)
    assert e["message"].startswith("file") and "empty" in e["message"]
    e = err(c.post(f"{API}/datasets/import", {"dataset": "x"}, format="json"), 415)
    err(
        c.post(
            f"{API}/datasets/import",
            {"dataset": "x", "file": "text, not a file"},
            format="multipart",
        ),
        400,
    )
    nothing_created()


def test_upload_over_the_limit_is_413_and_leaves_nothing(client_for: Client, settings: Any) -> None:
    settings.TETHER = {**settings.TETHER, "MAX_UPLOAD_BYTES": 100}
    c = client_for("alice")
    e = err(upload(c, "a,b\n" + "1,2\n" * 250), 413)  # 1 KB: stopped while streaming
    assert e["code"] == "too_large" and e["limit"] == 100
    nothing_created()
    big = "a,b\n" + "1,2\n" * 600_000  # 2.4 MB: refused from its Content-Length alone
    e = err(upload(c, big), 413)
    assert e["code"] == "too_large"
    nothing_created()
    r = upload(c, "a,b\n" + "1,2\n" * 20, dataset="small")  # 84 bytes fit
    assert r.status_code == 201, r.content


def test_broker_down_removes_the_upload(client_for: Client) -> None:
    def broker_down() -> None:
        raise ServiceUnavailable()

    c = client_for("alice")
    service.add_admission_check(broker_down)
    try:
        e = err(upload(c), 503)
    finally:
        service.remove_admission_check(broker_down)
    assert e["code"] == "broker_unavailable"
    nothing_created()


def test_export_and_download(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    buf = io.StringIO()
    generate.write(buf, 1500, seed=12)
    source = list(csv.DictReader(io.StringIO(buf.getvalue())))
    imported(c, buf.getvalue(), dataset="orders")

    task = exported(
        c,
        "orders",
        date_column="ship_date",
        from_date="2021-01-01",
        to_date="2021-06-30",
        columns=["id", "ship_date", "note"],
    )
    r = c.get(f"{API}/tasks/{task.pk}/download")
    assert r.status_code == 200
    assert r["Content-Type"] == "text/csv; charset=utf-8"
    assert r["Content-Disposition"] == f'attachment; filename="orders-{task.pk}.csv"'
    assert r.streaming  # a FileResponse; getvalue() joins its streaming_content
    content = r.getvalue()
    r.close()
    assert content == export_path(task.pk).read_bytes()
    rows = list(csv.reader(io.StringIO(content.decode())))
    assert rows[0] == ["id", "ship_date", "note"]
    wanted = [s["id"] for s in source if "2021-01-01" <= s["ship_date"] <= "2021-06-30"]
    assert [row[0] for row in rows[1:]] == wanted and wanted
    assert task.result is not None and task.result["rows"] == len(wanted)
    notes = {row[2] for row in rows[1:]}
    assert "'=not a formula" in notes and "=not a formula" not in notes  # neutralised

    everything = exported(c, "orders", raw=True)
    r = c.get(f"{API}/tasks/{everything.pk}/download")
    assert r.streaming
    back = list(csv.reader(io.StringIO(r.getvalue().decode())))
    r.close()
    assert len(back) == 1501 and "=not a formula" in {row[8] for row in back}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            {"date_column": "ship_date", "from_date": "2021-02-01", "to_date": "2021-01-01"},
            400,
            "after",
        ),
        ({"from_date": "2021-01-01"}, 400, "date_column"),
        ({"date_column": "note", "from_date": "2021-01-01"}, 400, "date or timestamp"),
        ({"date_column": "ship_date", "from_date": "01/02/2021"}, 400, "from_date"),
        ({"columns": ["id", "nope"]}, 400, "unknown column"),
        ({"columns": []}, 400, "columns"),
        ({"raw": "perhaps"}, 400, "raw"),
    ],
)
def test_bad_export_requests(
    client_for: Client, executor: EmbeddedExecutor, body: dict[str, Any], status: int, words: str
) -> None:
    c = client_for("alice")
    buf = io.StringIO()
    generate.write(buf, 20, seed=1)
    imported(c, buf.getvalue(), dataset="orders")
    e = err(c.post(f"{API}/datasets/orders/export", body, format="json"), status)
    assert words in e["message"], e
    assert not Task.objects.filter(type="csv_export").exists()
    e = err(c.post(f"{API}/datasets/missing/export", {}, format="json"), 404)
    assert e["code"] == "not_found"


def test_download_only_for_a_succeeded_export(client_for: Client) -> None:
    c = client_for("alice")
    ds = Dataset.objects.create(
        owner=c.user,  # type: ignore[attr-defined]
        name="d",
        table=sql.new_table_name(),
        columns=[{"name": "a", "type": "integer"}],
    )
    sql.create_table(ds.table, ds.columns)
    r = c.post(f"{API}/datasets/d/export", {}, format="json")
    assert r.status_code == 201, r.content
    task_id = r.json()["id"]  # no executor in this test: it stays queued
    e = err(c.get(f"{API}/tasks/{task_id}/download"), 404)
    assert e["status"] == "queued" and "succeeded" in e["message"]
    countdown = service.submit(c.user, "countdown", {"seconds": 1})  # type: ignore[attr-defined]
    Task.objects.filter(pk=countdown.pk).update(status="succeeded")
    e = err(c.get(f"{API}/tasks/{countdown.pk}/download"), 404)
    assert "csv_export" in e["message"]
    Task.objects.filter(pk=task_id).update(status="succeeded")
    e = err(c.get(f"{API}/tasks/{task_id}/download"), 404)  # succeeded, but no file
    assert "gone" in e["message"]
    err(c.get(f"{API}/tasks/999999/download"), 404)


def test_another_users_dataset_is_404_everywhere(
    client_for: Client, executor: EmbeddedExecutor
) -> None:
    alice, bob = client_for("alice"), client_for("bob")
    imported(alice, dataset="mine")
    export = exported(alice, "mine")
    assert bob.get(f"{API}/datasets").json() == []
    for resp in (
        bob.get(f"{API}/datasets/mine"),
        bob.get(f"{API}/datasets/mine/rows"),
        bob.delete(f"{API}/datasets/mine"),
        bob.post(f"{API}/datasets/mine/export", {}, format="json"),
        bob.get(f"{API}/tasks/{export.pk}/download"),
    ):
        assert err(resp, 404)["code"] == "not_found"
    e = err(upload(bob, "a\n1\n", dataset="mine", mode="append"), 404)
    assert e["code"] == "not_found"
    assert Dataset.objects.filter(name="mine").count() == 1
    imported(bob, "a\n1\n", dataset="mine")  # names are per user
    assert bob.get(f"{API}/datasets/mine/rows").json()["rows"] == [[1]]
    assert alice.get(f"{API}/datasets/mine").json()["row_count"] == 4


def test_delete_drops_the_table(client_for: Client, executor: EmbeddedExecutor) -> None:
    c = client_for("alice")
    imported(c, dataset="gone")
    table = Dataset.objects.get(name="gone").table
    assert sql.table_exists(table)
    assert c.delete(f"{API}/datasets/gone").status_code == 204
    assert not sql.table_exists(table) and not Dataset.objects.exists()
    err(c.get(f"{API}/datasets/gone"), 404)
    err(c.delete(f"{API}/datasets/gone"), 404)


def test_delete_is_refused_while_an_export_is_unfinished(client_for: Client) -> None:
    c = client_for("alice")
    ds = Dataset.objects.create(
        owner=c.user,  # type: ignore[attr-defined]
        name="busy",
        table=sql.new_table_name(),
        columns=[{"name": "a", "type": "integer"}],
    )
    sql.create_table(ds.table, ds.columns)
    task_id = c.post(f"{API}/datasets/busy/export", {}, format="json").json()["id"]
    e = err(c.delete(f"{API}/datasets/busy"), 409)
    assert e["code"] == "dataset_busy" and e["tasks"] == [task_id]
    assert c.post(f"{API}/tasks/{task_id}/cancel").status_code == 202
    assert c.delete(f"{API}/datasets/busy").status_code == 204
    assert not sql.table_exists(ds.table)


def test_schema_documents_the_datasets_endpoints(client_for: Client) -> None:
    schema = client_for("alice").get("/api/schema/?format=json").json()
    paths = schema["paths"]
    for path in (
        "/api/v1/datasets",
        "/api/v1/datasets/import",
        "/api/v1/datasets/{name}",
        "/api/v1/datasets/{name}/rows",
        "/api/v1/datasets/{name}/export",
        "/api/v1/tasks/{id}/download",
    ):
        assert path in paths, sorted(paths)
    upload_op = paths["/api/v1/datasets/import"]["post"]
    assert upload_op["tags"] == ["datasets"]
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
