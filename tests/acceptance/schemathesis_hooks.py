"""Schemathesis hooks for ``test_openapi`` (loaded by ``st run`` via SCHEMATHESIS_HOOKS).

Every request carries a token of the test's user. Fuzzing ``POST /auth/logout`` and
``DELETE /auth/tokens/{id}`` revokes tokens, so the token is fetched again whenever an
answer is 401 (schemathesis then replays the request with the new one).
"""

from __future__ import annotations

import ast
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
