"""Shared fixtures. Service fixtures skip locally when a service is missing and fail
under CI=true (the suite must never pass in CI by skipping)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_port(name: str, port: int, host: str = "127.0.0.1") -> None:
    try:
        with socket.create_connection((host, port), timeout=1):
            return
    except OSError:
        message = f"{name} is not reachable on {host}:{port}"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)


@pytest.fixture(autouse=True)
def _test_settings(settings: Any) -> None:
    settings.TETHER = {**settings.TETHER, "AUTH_RATE": "100000/min"}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
