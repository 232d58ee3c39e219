"""REST API v1 in-process: auth, tokens, errors, tenancy, control responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from tether import service
from tether.models import ApiToken, Task

API = "/api/v1"
Client = Callable[..., APIClient]


def err(resp: Any) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"], body
    return body["error"]


@pytest.mark.django_db
class TestAuth:
    def test_register_login_logout(self) -> None:
        c = APIClient()
        r = c.post(
            f"{API}/auth/register", {"username": "bob", "password": "Very-secret-77"}, format="json"
        )
        assert r.status_code == 201 and r.json() == {"username": "bob"}
        r = c.post(
            f"{API}/auth/token", {"username": "bob", "password": "Very-secret-77"}, format="json"
        )
        assert r.status_code == 200
        raw = r.json()["token"]
        assert r.json()["expires_at"]
        stored = ApiToken.objects.get()
        assert stored.key_hash != raw and raw not in stored.key_hash  # only a hash is kept
        c.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        assert c.get(f"{API}/tasks").status_code == 200
        assert c.post(f"{API}/auth/logout").status_code == 204
        r = c.get(f"{API}/tasks")
        assert r.status_code == 401 and "revoked" in err(r)["message"]

    def test_several_tokens_listed_and_revocable(self) -> None:
        c = APIClient()
        c.post(
            f"{API}/auth/register", {"username": "bob", "password": "Very-secret-77"}, format="json"
        )
        toks = [
            c.post(
                f"{API}/auth/token",
                {"username": "bob", "password": "Very-secret-77", "name": f"laptop{i}"},
                format="json",
            ).json()["token"]
            for i in range(2)
        ]
        c.credentials(HTTP_AUTHORIZATION=f"Token {toks[0]}")
        listed = c.get(f"{API}/auth/tokens").json()
        assert {t["name"] for t in listed} == {"laptop0", "laptop1"}
        other = next(t for t in listed if not t["current"])
        assert c.delete(f"{API}/auth/tokens/{other['id']}").status_code == 204
        c.credentials(HTTP_AUTHORIZATION=f"Token {toks[1]}")
        assert c.get(f"{API}/tasks").status_code == 401

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"username": "bob", "password": "short"}, "password"),
            ({"username": "bad name!", "password": "Very-secret-77"}, "username"),
            ({"password": "Very-secret-77"}, "username"),
        ],
    )
    def test_register_rejects_bad_input(self, body: dict[str, str], field: str) -> None:
        r = APIClient().post(f"{API}/auth/register", body, format="json")
        assert r.status_code == 400
        assert err(r)["message"].startswith(field)

    def test_duplicate_username(self) -> None:
        c = APIClient()
        body = {"username": "bob", "password": "Very-secret-77"}
        c.post(f"{API}/auth/register", body, format="json")
        r = c.post(f"{API}/auth/register", {**body, "username": "BOB"}, format="json")
        assert r.status_code == 400 and "taken" in err(r)["message"]

    def test_wrong_password(self, make_user: Any) -> None:
        make_user("bob")
        r = APIClient().post(
            f"{API}/auth/token", {"username": "bob", "password": "nope"}, format="json"
        )
        assert r.status_code == 401 and err(r)["code"] == "invalid_credentials"

    @pytest.mark.parametrize("header", [None, "Token garbage", "Token", "Basic abc"])
    def test_missing_or_bad_token(self, header: str | None) -> None:
        c = APIClient()
        if header:
            c.credentials(HTTP_AUTHORIZATION=header)
        r = c.get(f"{API}/tasks")
        assert r.status_code == 401
        err(r)

    def test_expired_token(self, make_user: Any) -> None:
        token, raw = ApiToken.issue(make_user("bob"), ttl=timedelta(days=1))
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        r = c.get(f"{API}/tasks")
        assert r.status_code == 401 and "expired" in err(r)["message"]

    def test_login_is_throttled(self, settings: Any) -> None:
        from django.core.cache import cache

        cache.clear()
        settings.TETHER = {**settings.TETHER, "AUTH_RATE": "3/min"}
        c = APIClient()
        codes = [
            c.post(
                f"{API}/auth/token", {"username": "x", "password": "y"}, format="json"
            ).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [401] * 3 and codes[3] == 429


@pytest.mark.django_db
class TestTasks:
    def test_task_types(self, client_for: Client) -> None:
        types = {t["name"]: t for t in client_for().get(f"{API}/task-types").json()}
        assert {"countdown", "fibonacci", "add", "render"} <= set(types)
        assert types["countdown"]["params_schema"]["properties"]["tick_ms"]["default"] == 10
        assert types["render"]["queue"] == "render" and types["render"]["supports_pause"]

    def test_submit_and_detail(self, client_for: Client) -> None:
        c = client_for()
        r = c.post(f"{API}/tasks", {"type": "countdown", "params": {"seconds": 1}}, format="json")
        assert r.status_code == 201
        task = r.json()
        assert task["status"] == "queued" and task["params"] == {"seconds": 1, "tick_ms": 10}
        assert task["owner"] == "alice" and task["attempts"] == 1
        detail = c.get(f"{API}/tasks/{task['id']}").json()
        assert detail["id"] == task["id"] and "progress" in detail
        events = c.get(f"{API}/tasks/{task['id']}/events").json()
        assert events[0]["to_status"] == "queued" and events[0]["actor"] == "user:alice"

    @pytest.mark.parametrize(
        ("body", "code", "needle"),
        [
            ({"type": "nope"}, "unknown_task_type", "nope"),
            ({"type": "countdown", "params": {"seconds": -1}}, "invalid_params", "seconds"),
            ({"type": "countdown", "params": {}}, "invalid_params", "seconds"),
            ({"type": "fibonacci", "params": {"n": 10**9}}, "invalid_params", "capped"),
            ({"type": "fibonacci", "params": {"n": -3}}, "invalid_params", "params.n"),
            ({"type": "render", "params": {"frames": 10**7}}, "invalid_params", "frames"),
            (
                {"type": "add", "params": {"operand1": "x", "operand2": 1}},
                "invalid_params",
                "operand1",
            ),
            ({"type": "add", "params": [1, 2]}, "invalid_params", "object"),
            (
                {"type": "countdown", "params": {"seconds": 1}, "queue": "a b"},
                "invalid_params",
                "queue",
            ),
            (
                {"type": "countdown", "params": {"seconds": 1}, "pause_timeout": 0},
                "invalid_params",
                "pause_timeout",
            ),
            ({"params": {}}, "invalid", "type"),
        ],
    )
    def test_bad_submit_creates_nothing(
        self, client_for: Client, body: dict[str, Any], code: str, needle: str
    ) -> None:
        r = client_for().post(f"{API}/tasks", body, format="json")
        assert r.status_code == 400
        e = err(r)
        assert e["code"] == code and needle in e["message"], e
        assert Task.objects.count() == 0

    def test_malformed_json(self, client_for: Client) -> None:
        r = client_for().post(f"{API}/tasks", data="{nope", content_type="application/json")
        assert r.status_code == 400 and err(r)["code"] == "parse_error"
        assert Task.objects.count() == 0

    def test_list_filters_and_pagination(self, client_for: Client) -> None:
        c = client_for()
        for i in range(3):
            c.post(
                f"{API}/tasks",
                {"type": "add", "params": {"operand1": i, "operand2": 0}},
                format="json",
            )
        c.post(f"{API}/tasks", {"type": "countdown", "params": {"seconds": 1}}, format="json")
        page = c.get(f"{API}/tasks?page_size=2").json()
        assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
        ids = [t["id"] for t in page["results"]]
        assert ids == sorted(ids, reverse=True)  # newest first
        assert c.get(f"{API}/tasks?type=countdown").json()["count"] == 1
        assert c.get(f"{API}/tasks?status=queued,running").json()["count"] == 4
        assert c.get(f"{API}/tasks?status=paused").json()["count"] == 0
        r = c.get(f"{API}/tasks?status=sleeping")
        assert r.status_code == 400 and "sleeping" in err(r)["message"]

    def test_control_conflicts_report_status(self, client_for: Client) -> None:
        c = client_for()
        tid = c.post(
            f"{API}/tasks", {"type": "countdown", "params": {"seconds": 1}}, format="json"
        ).json()["id"]
        r = c.post(f"{API}/tasks/{tid}/resume")
        assert r.status_code == 409
        assert err(r) == {
            "code": "illegal_transition",
            "status": "queued",
            "message": "cannot resume a task that is queued",
        }
        r = c.post(f"{API}/tasks/{tid}/pause")
        assert r.status_code == 202 and r.json()["status"] == "paused"
        r = c.post(f"{API}/tasks/{tid}/pause")
        assert r.status_code == 409 and err(r)["status"] == "paused"
        r = c.post(f"{API}/tasks/{tid}/cancel", {"reason": "changed my mind"}, format="json")
        assert r.status_code == 202 and r.json()["status"] == "cancelled"
        assert c.get(f"{API}/tasks/{tid}/events").json()[2]["reason"] == "changed my mind"
        for action in ("pause", "resume", "cancel"):
            r = c.post(f"{API}/tasks/{tid}/{action}")
            assert r.status_code == 409 and err(r)["status"] == "cancelled"

    def test_pause_of_running_task_is_pausing(self, client_for: Client) -> None:
        c = client_for()
        tid = c.post(
            f"{API}/tasks", {"type": "countdown", "params": {"seconds": 1}}, format="json"
        ).json()["id"]
        Task.objects.filter(pk=tid).update(status="running")
        r = c.post(f"{API}/tasks/{tid}/pause")
        assert r.status_code == 202 and r.json()["status"] == "pausing"
        r = c.post(f"{API}/tasks/{tid}/resume")
        assert r.status_code == 409 and err(r)["message"] == "cannot resume a task that is pausing"

    def test_tenancy_404_everywhere(self, client_for: Client) -> None:
        a, b = client_for("alice"), client_for("bob")
        tid = a.post(
            f"{API}/tasks", {"type": "countdown", "params": {"seconds": 1}}, format="json"
        ).json()["id"]
        for path in ("", "/events"):
            r = b.get(f"{API}/tasks/{tid}{path}")
            assert r.status_code == 404 and err(r)["code"] == "not_found"
        for action in ("pause", "resume", "cancel"):
            assert b.post(f"{API}/tasks/{tid}/{action}").status_code == 404
        assert b.get(f"{API}/tasks").json()["count"] == 0
        assert Task.objects.get(pk=tid).status == "queued"
        assert [e.to_status for e in Task.objects.get(pk=tid).events.all()] == ["queued"]
        staff = client_for("root", staff=True)
        assert staff.get(f"{API}/tasks/{tid}").status_code == 200

    def test_unknown_task_and_endpoint(self, client_for: Client) -> None:
        c = client_for()
        r = c.get(f"{API}/tasks/424242")
        assert r.status_code == 404 and err(r)["code"] == "not_found"
        r = c.get(f"{API}/nothing-here")
        assert r.status_code == 404 and err(r)["code"] == "not_found"


@pytest.mark.django_db
def test_health_schema_and_docs() -> None:
    c = APIClient()
    health = c.get(f"{API}/health").json()
    assert health["status"] == "ok" and health["executor"] == "embedded"
    assert health["database"] == connection.vendor and health["version"]
    schema = c.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in (
        "/api/v1/tasks",
        "/api/v1/tasks/{id}/pause",
        "/api/v1/auth/token",
        "/api/v1/task-types",
        "/api/v1/tasks/{id}/events",
        "/api/v1/health",
    ):
        assert path in schema["paths"], path
    assert "TokenAuth" in schema["components"]["securitySchemes"]
    docs = c.get("/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()


def test_service_submit_many_is_all_or_nothing(make_user: Any) -> None:
    from tether.exceptions import InvalidParams

    with pytest.raises(InvalidParams):
        service.submit_many(make_user(), "add", [{"operand1": 1, "operand2": 2}, {"x": 1}])
    assert Task.objects.count() == 0
