"""The OpenAPI document tells the truth: it is a valid OpenAPI document, and a bounded
schemathesis pass with every check over every operation of a live ``tether serve``
finds nothing (no 500, no undocumented status, no response off its schema, no request
the document calls valid refused or one it calls invalid accepted, …).

Run it alone with ``.venv/bin/pytest -q tests/acceptance/test_openapi.py``; a failure
prints schemathesis' report with a ``curl`` line per finding.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from tests.acceptance.conftest import PASSWORD, REPO, ServerFactory, login, wait_for

ST = Path(sys.executable).parent / "st"
SEED = 20261201
EXAMPLES = 10  # per operation and phase
MAX_SECONDS = 75  # fuzzing and stateful testing repeat until this is spent
CONFIG = Path(__file__).with_name("schemathesis.toml")
CSV = b"id,day,name\n1,2024-01-01,a\n2,2024-01-02,b\n"


def schema_document(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/schema/", headers={"Accept": "application/json"}, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_schema_is_a_valid_openapi_document(server: ServerFactory) -> None:
    document = schema_document(server().url)
    validate(document)  # raises, naming the offending part


def test_every_operation_lists_its_errors_with_the_error_schema(server: ServerFactory) -> None:
    document = schema_document(server().url)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            responses = operation["responses"]
            assert "400" in responses, where  # a bad Host header reaches every operation
            if operation.get("security") != [{}]:  # token required
                assert "401" in responses, where
            if "{" in path:
                assert "404" in responses, where
            if "requestBody" in operation:
                assert "413" in responses and "415" in responses, where
            for code, response in responses.items():
                if int(code) >= 400 and (path, code) != ("/api/v1/health", "503"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (where, code)
    ops = {(m.upper(), p): o for p, ms in document["paths"].items() for m, o in ms.items()}
    assert "429" in ops["POST", "/api/v1/auth/token"]["responses"]
    assert "409" in ops["POST", "/api/v1/tasks/{id}/pause"]["responses"]
    assert "503" in ops["POST", "/api/v1/tasks"]["responses"]


def test_allow_headers_name_only_documented_methods(server: ServerFactory) -> None:
    srv = server()
    document = schema_document(srv.url)
    with login(srv) as client:
        for path, operations in document["paths"].items():
            url = path.replace("{id}", "1").replace("{name}", "d").removeprefix("/api/v1")
            allow = client.options(url).headers.get("Allow", "")
            advertised = {m.strip().lower() for m in allow.split(",") if m.strip()}
            assert advertised - {"head", "options"} <= set(operations), (path, allow)


def test_task_type_names_are_an_enum_of_the_submittable_types(server: ServerFactory) -> None:
    srv = server()
    document = schema_document(srv.url)
    with login(srv) as client:
        listed = sorted(t["name"] for t in client.get("/task-types").json())
    submit = document["components"]["schemas"]["SubmitRequest"]
    enum_ref = submit["properties"]["type"]["allOf"][0]["$ref"]
    names = document["components"]["schemas"][enum_ref.rsplit("/", 1)[1]]["enum"]
    assert sorted(names) == listed
    assert "countdown" in names and "csv_import" not in names  # internal types are not
    # each type's params schema, so a request the document calls valid is accepted
    variants = {v["title"]: v["properties"]["params"] for v in submit["oneOf"]}
    assert sorted(variants) == listed
    assert variants["countdown"]["required"] == ["seconds"]
    # JSON Schema's integer takes 1.0; the params check does not, and the document says so
    assert "not 1.0" in variants["fibonacci"]["properties"]["n"]["description"]
    assert "not 1.0" not in variants["countdown"]["properties"]["seconds"]["description"]


@pytest.mark.timeout(400)
def test_schemathesis_finds_nothing(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(TETHER_AUTH_RATE="100000/min")  # the pass logs in again after logouts
    username = f"st-{uuid.uuid4().hex[:10]}"
    with login(srv, username) as client:  # something for the links to lead to
        r = client.post(
            "/datasets/import", data={"dataset": "orders"}, files={"file": ("o.csv", CSV)}
        )
        assert r.status_code == 201, r.text
        wait_for(client, r.json()["id"], "succeeded")
        r = client.post("/datasets/orders/export", json={})
        assert r.status_code == 201, r.text
        wait_for(client, r.json()["id"], "succeeded")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "SCHEMATHESIS_HOOKS": "tests.acceptance.schemathesis_hooks",
        "TETHER_ST_BASE_URL": srv.url,
        "TETHER_ST_USERNAME": username,
        "TETHER_ST_PASSWORD": PASSWORD,
    }
    args = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "run",
        f"{srv.url}/api/schema/",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--max-time",
        str(MAX_SECONDS),
        "--seed",
        str(SEED),
        "--workers",  # one: Python 3.11's ast.parse is not thread-safe ("AST constructor
        "1",  # recursion depth mismatch"), and hypothesis parses lambdas with it
        "--generation-database",
        "none",
        "--no-color",
        "--request-timeout",
        "30",
    ]
    done = subprocess.run(
        args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, f"schemathesis found problems:\n{report}"
