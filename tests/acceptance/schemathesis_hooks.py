"""Schemathesis hooks for ``test_openapi`` (loaded by ``st run`` via SCHEMATHESIS_HOOKS).

Every request carries a token of the test's user. Fuzzing ``POST /auth/logout`` and
``DELETE /auth/tokens/{id}`` revokes tokens, so the token is fetched again whenever an
answer is 401 (schemathesis then replays the request with the new one).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import schemathesis

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
