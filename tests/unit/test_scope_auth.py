"""Origin checks of the WebSocket/SSE endpoints (pure logic; auth runs over sockets in
tests/acceptance/test_websocket.py)."""

from __future__ import annotations

import pytest

from tether.server.config import env_origins
from tether.server.scope_auth import origin_allowed

ALLOWED = ("https://dash.example.com",)


def scope(host: str | None, origin: str | None) -> dict[str, object]:
    headers = []
    if host is not None:
        headers.append((b"host", host.encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "websocket", "headers": headers}


@pytest.mark.parametrize(
    "host,origin,ok",
    [
        ("127.0.0.1:8000", None, True),  # not a browser
        ("127.0.0.1:8000", "http://127.0.0.1:8000", True),
        ("localhost:8000", "http://LOCALHOST:8000/", True),
        ("[::1]:8000", "http://[::1]:8000", True),
        ("localhost", "http://localhost", True),
        ("localhost", "http://localhost:80", True),
        ("localhost:443", "https://localhost", True),
        ("127.0.0.1:8000", "http://127.0.0.1:8001", False),  # another port, another site
        ("127.0.0.1:8000", "http://evil.example:8000", False),
        ("evil.example:8000", "http://evil.example:8000", False),  # DNS rebinding
        ("127.0.0.1:8000", "null", False),
        ("127.0.0.1:8000", "file://", False),
        ("127.0.0.1:8000", "http://127.0.0.1:99999", False),
        (None, "http://127.0.0.1:8000", False),
        ("127.0.0.1:8000", "https://dash.example.com", True),  # TETHER_ALLOWED_ORIGINS
        ("127.0.0.1:8000", "https://dash.example.com:444", False),
    ],
)
def test_origin_allowed(host: str | None, origin: str | None, ok: bool) -> None:
    assert origin_allowed(scope(host, origin), ALLOWED) is ok


def test_allowed_origins_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_ALLOWED_ORIGINS", " https://Dash.example.com/, http://h:3000,")
    assert env_origins("TETHER_ALLOWED_ORIGINS") == ("https://dash.example.com", "http://h:3000")
    monkeypatch.setenv("TETHER_ALLOWED_ORIGINS", "dash.example.com")
    with pytest.raises(ValueError, match="not an origin"):
        env_origins("TETHER_ALLOWED_ORIGINS")
