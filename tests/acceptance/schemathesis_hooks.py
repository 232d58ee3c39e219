"""Schemathesis hooks for ``test_openapi`` (loaded by ``st run`` via SCHEMATHESIS_HOOKS).

Every request carries a token of the test's user. Fuzzing ``POST /auth/logout`` and
``DELETE /auth/tokens/{id}`` revokes tokens, so the token is fetched again whenever an
answer is 401 (schemathesis then replays the request with the new one).
"""

from __future__ import annotations

import ast
import json
import os
import threading
from typing import Any

import httpx
import schemathesis

# CPython 3.11 keeps the ast module's recursion counter in state that threads share, so
# two threads inside ast.parse at once can fail with "AST constructor recursion depth
# mismatch". Hypothesis parses lambdas' source to describe its strategies, and
# schemathesis does that from more than one thread: parse one at a time.
_AST_LOCK = threading.Lock()
_unlocked_parse = ast.parse


def _parse_one_at_a_time(*args: Any, **kwargs: Any) -> Any:
    with _AST_LOCK:
        return _unlocked_parse(*args, **kwargs)


ast.parse = _parse_one_at_a_time

BASE = os.environ["TETHER_ST_BASE_URL"]
USERNAME = os.environ["TETHER_ST_USERNAME"]
PASSWORD = os.environ["TETHER_ST_PASSWORD"]


@schemathesis.auth(retry_on=[401])
class TetherToken:
    def get(self, case: Any, context: Any) -> str:
        r = httpx.post(
            f"{BASE}/api/v1/auth/token",
            json={"username": USERNAME, "password": PASSWORD, "name": "schemathesis"},
            timeout=30,
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Token {data}"


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but one: an integer param sent as an integral float (3392.0).
    JSON Schema counts 3392.0 as an integer and no schema can exclude it; Tether's
    params check refuses it (400 ``invalid_params``, as each such param's description
    in the document says), so a task never gets a float where it counts on an int."""
    if response.status_code != 400 or not isinstance(case.body, dict):
        return True
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return True
    params = case.body.get("params")
    value = params.get(error.get("field")) if isinstance(params, dict) else None
    refused_whole_float = (
        error.get("code") == "invalid_params"
        and "is not of type 'integer'" in str(error.get("message"))
        and isinstance(value, float)
        and value.is_integer()
    )
    return not refused_whole_float
