"""No input reaches a 500 or an HTML page under /api/: every answer is a 4xx with
``{"error": {"code", "message"}}`` (in-process, on a real database)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as DjangoClient
from rest_framework.test import APIClient

from tests.integration import tasks  # noqa: F401 (registers it_gate)
from tether import service
from tether.datasets import sql
from tether.models import Dataset, Task

API = "/api/v1"
Client = Callable[..., APIClient]


def error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.content[:300])
    assert resp["Content-Type"].startswith("application/json"), resp["Content-Type"]
    body = json.loads(resp.content)
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    if code is not None:
        assert body["error"]["code"] == code, body
    return dict(body["error"])


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.django_db
class TestJsonNesting:
    def test_deep_json_without_a_token_is_400(self) -> None:
        c = APIClient()
        r = c.post(f"{API}/auth/register", nested(10_000), content_type="application/json")
        assert "64" in error(r, 400, "too_deep")["message"]
        r = c.post(f"{API}/auth/token", nested(100_000), content_type="application/json")
        error(r, 400, "too_deep")

    def test_deep_params_are_400_and_create_nothing(self, client_for: Client) -> None:
        c = client_for()
        body = '{"type": "add", "params": {"x": ' + nested(10_000) + "}}"
        error(c.post(f"{API}/tasks", body, content_type="application/json"), 400, "too_deep")
        objects = '{"a": ' * 5000 + "1" + "}" * 5000
        error(c.post(f"{API}/tasks", objects, content_type="application/json"), 400, "too_deep")
        assert not Task.objects.exists()

    def test_64_levels_parse_65_do_not(self, client_for: Client) -> None:
        c = client_for()
        ok = c.post(f"{API}/tasks", nested(64), content_type="application/json")
        assert error(ok, 400)["code"] != "too_deep"  # parsed; not a submit body
        error(c.post(f"{API}/tasks", nested(65), content_type="application/json"), 400, "too_deep")

    def test_params_deeper_than_a_database_stores_are_400(self, client_for: Client) -> None:
        # MariaDB's JSON check refuses 32 levels: params that parse must still be stored
        c = client_for()
        deep = {"type": "it_gate", "params": {"gate": "g", "x": json.loads(nested(40))}}
        r = c.post(f"{API}/tasks", deep, format="json")
        assert "params.x" in error(r, 400, "invalid_params")["message"]
        assert not Task.objects.exists()

    def test_brackets_inside_strings_do_not_count(self, client_for: Client) -> None:
        c = client_for()
        text = '[{\\"' * 500 + "\\\\"
        body = json.dumps({"type": "countdown", "params": {"seconds": 0}, "queue": text})
        r = c.post(f"{API}/tasks", body, content_type="application/json")
        assert error(r, 400)["code"] != "too_deep"


@pytest.mark.django_db
class TestUnstorableText:
    """NUL and unpaired surrogates: PostgreSQL stores neither, and no database's JSON
    takes an unpaired surrogate (they were 500s)."""

    @pytest.mark.parametrize(
        "params",
        [
            '{"gate": "a\\u0000b"}',
            '{"gate": "a\\ud800b"}',
            '{"gate": "b", "x\\udfff": 1}',
            '{"gate": "b", "x": [[{"y": "\\udc00"}]]}',
        ],
    )
    def test_in_a_body(self, client_for: Client, params: str) -> None:
        c = client_for()
        body = '{"type": "it_gate", "params": ' + params + "}"
        error(c.post(f"{API}/tasks", body, content_type="application/json"), 400, "bad_text")
        assert not Task.objects.exists()

    def test_escapes_that_are_text_are_kept(self, client_for: Client) -> None:
        c = client_for()
        body = '{"type": "it_gate", "params": {"gate": "a\\\\u0000 \\ud83d\\ude00"}}'
        r = c.post(f"{API}/tasks", body, content_type="application/json")
        assert r.status_code == 201, r.content
        assert r.json()["params"] == {"gate": "a\\u0000 \U0001f600"}

    def test_in_the_url(self, client_for: Client) -> None:
        c = client_for()
        error(c.get(f"{API}/tasks?type=%00"), 400, "bad_request")
        error(c.get(f"{API}/datasets/%00x/rows"), 400, "bad_request")


@pytest.mark.django_db
def test_body_over_the_limit_is_413_json(client_for: Client, settings: Any) -> None:
    c = client_for()
    body = json.dumps({"type": "countdown", "params": {"pad": "x" * (1024 * 1024)}})
    r = c.post(f"{API}/tasks", body, content_type="application/json")
    assert "1 MiB" in error(r, 413, "too_large")["message"]
    r = APIClient().post(f"{API}/auth/register", body, content_type="application/json")
    error(r, 413, "too_large")
    assert not Task.objects.exists()


@pytest.mark.django_db
def test_too_many_query_fields_is_400_json(client_for: Client) -> None:
    c = client_for()
    query = "&".join(f"f{i}=1" for i in range(1500))
    error(c.get(f"{API}/tasks?{query}"), 400, "too_many_fields")


@pytest.mark.django_db
@pytest.mark.parametrize("debug", [False, True])
def test_bad_host_is_400_json_under_api(settings: Any, debug: bool) -> None:
    settings.DEBUG = debug
    c = DjangoClient(HTTP_HOST="evil.example")
    error(c.get(f"{API}/health"), 400, "bad_host")
    error(c.post(f"{API}/auth/token", {}, content_type="application/json"), 400, "bad_host")
    assert c.get("/admin/login/").status_code == 400  # Django's own page outside the API


@pytest.mark.django_db
class TestHugeNumbers:
    HUGE = "9" * 30

    def test_task_and_token_ids(self, client_for: Client) -> None:
        c = client_for()
        error(c.get(f"{API}/tasks/{self.HUGE}"), 404)
        error(c.get(f"{API}/tasks/{self.HUGE}/events"), 404)
        error(c.post(f"{API}/tasks/{self.HUGE}/pause"), 404)
        error(c.get(f"{API}/tasks/{self.HUGE}/download"), 404)
        error(c.delete(f"{API}/auth/tokens/{self.HUGE}"), 404)

    def test_rows_offset_and_limit(self, client_for: Client, transactional_db: None) -> None:
        c = client_for()
        table = sql.new_table_name()
        sql.create_table(table, [{"name": "a", "type": "integer"}])
        columns = [{"name": "a", "type": "integer"}]
        Dataset.objects.create(owner=c.user, name="d", table=table, columns=columns)  # type: ignore[attr-defined]
        try:
            for offset in (3, 2**63 - 1):
                r = c.get(f"{API}/datasets/d/rows?offset={offset}&limit=1")
                assert r.status_code == 200 and r.json()["rows"] == [], r.content
            for query in (
                f"offset={self.HUGE}",
                f"limit={self.HUGE}",
                f"offset=-{self.HUGE}",
                "offset=1e30",
                "limit=nan",
            ):
                error(c.get(f"{API}/datasets/d/rows?{query}"), 400, "invalid")
        finally:
            sql.drop_table(table)

    def test_pagination(self, client_for: Client) -> None:
        c = client_for()
        for query in (f"page={self.HUGE}", f"page_size={self.HUGE}", "page=-1", "page=x"):
            r = c.get(f"{API}/tasks?{query}")
            assert r.status_code in (200, 400, 404), (query, r.status_code)
            if r.status_code != 200:
                error(r, r.status_code)

    @pytest.mark.parametrize("value", ["1e308", "1" + "0" * 400, "-1", "Infinity", '"nan"', "true"])
    def test_pause_timeout(self, client_for: Client, value: str) -> None:
        c = client_for()
        body = '{"type": "countdown", "params": {"seconds": 0}, "pause_timeout": ' + value + "}"
        error(c.post(f"{API}/tasks", body, content_type="application/json"), 400)
        assert not Task.objects.exists()


@pytest.mark.django_db
class TestPages:
    @pytest.mark.parametrize("page", ["0", "00", "-1", "x", "1.5", "1e3", "", "last", "%EF%BC%91"])
    def test_a_page_that_is_not_a_number_from_1_is_400(self, client_for: Client, page: str) -> None:
        e = error(client_for().get(f"{API}/tasks?page={page}"), 400, "invalid_params")
        assert e["field"] == "page" and "page" in e["message"], e

    def test_a_page_past_the_end_is_404(self, client_for: Client) -> None:
        c = client_for()
        assert c.get(f"{API}/tasks?page=1").status_code == 200  # an empty list has page 1
        assert c.get(f"{API}/tasks?page=001").status_code == 200
        for page in ("2", "9" * 30, "1" + "0" * 5000):
            assert (
                "no such page"
                in error(c.get(f"{API}/tasks?page={page}"), 404, "not_found")["message"]
            )


def test_fields_of_an_invalid_answer_is_an_object(client_for: Client) -> None:
    """GET or DELETE /datasets/import (a dataset named "import") say what is wrong as
    every 400 ``invalid`` does: ``fields`` maps a field, or ``non_field_errors``."""
    c = client_for()
    for method in (c.get, c.delete):
        e = error(method(f"{API}/datasets/import"), 400, "invalid")
        assert e["fields"] == {"non_field_errors": [e["message"]]}, e
        assert "'import' is a reserved name" in e["message"], e


@pytest.mark.django_db
class TestStrictTypes:
    @pytest.mark.parametrize(
        "field,value",
        [("queue", 5), ("type", 5), ("queue", True), ("type", ["add"]), ("queue", {"a": 1})],
    )
    def test_submit(self, client_for: Client, field: str, value: Any) -> None:
        c = client_for()
        body = {"type": "countdown", "params": {"seconds": 0}, field: value}
        r = c.post(f"{API}/tasks", body, format="json")
        assert field in error(r, 400, "invalid")["message"]
        assert not Task.objects.exists()

    @pytest.mark.parametrize(
        "task_type,params,name",
        [
            ("render", '{"frames": 1e0}', "frames"),
            ("render", '{"frames": 2.0}', "frames"),
            ("render", '{"frames": true}', "frames"),
            ("fibonacci", '{"n": 20000.0}', "n"),
            ("countdown", '{"seconds": 0, "tick_ms": 1e1}', "tick_ms"),
        ],
    )
    def test_an_integer_param_is_not_a_float(
        self, client_for: Client, task_type: str, params: str, name: str
    ) -> None:
        """JSON Schema counts 1.0 as an integer; a task given one as ``range(1.0)``
        would fail three attempts with a TypeError."""
        body = f'{{"type": "{task_type}", "params": {params}}}'
        r = client_for().post(f"{API}/tasks", body, content_type="application/json")
        e = error(r, 400, "invalid_params")
        assert e["field"] == name and f"params.{name}:" in e["message"], e
        assert "is not of type 'integer'" in e["message"], e
        assert not Task.objects.exists()

    def test_auth_and_control(self, client_for: Client) -> None:
        anon = APIClient()
        r = anon.post(f"{API}/auth/register", {"username": 12345, "password": "x"}, format="json")
        error(r, 400, "invalid")
        r = anon.post(f"{API}/auth/token", {"username": "a", "password": 123456789}, format="json")
        error(r, 400, "invalid")
        c = client_for()
        task = service.submit(c.user, "countdown", {"seconds": 30})  # type: ignore[attr-defined]
        error(c.post(f"{API}/tasks/{task.pk}/pause", {"reason": 7}, format="json"), 400, "invalid")


@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500(
    client_for: Client, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Defence in depth: should a view fail, the API still answers JSON (in DEBUG too)."""

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, "visible_tasks", broken)
    c = client_for()
    c.raise_request_exception = False
    for debug in (False, True):
        settings.DEBUG = debug
        r = c.get(f"{API}/tasks")
        assert "boom" not in error(r, 500, "server_error")["message"]
