"""Who is asking, for the ASGI endpoints Django's views do not serve (WebSocket, SSE).

The same rules as the REST API: an ``Authorization: Token <token>`` header (hashed,
expiring, revocable tokens of ``tether.api.auth``), or the Django session cookie of a
logged-in browser. A cookie is sent by the browser whatever page opens the connection,
so ``origin_allowed`` refuses pages of other sites (cross-site WebSocket hijacking).
Database work runs in a small thread pool, never in the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from importlib import import_module
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest
from django.http.request import split_domain_port, validate_host

Scope = dict[str, Any]
T = TypeVar("T")
DB_THREADS = 8
_pool: ThreadPoolExecutor | None = None


class AuthFailed(Exception):
    """A credential was presented and is not good (the message says why)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _db_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="tether-asgi-db")
    return _pool


async def in_db_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking Django/ORM work off the event loop (stale connections closed as
    Django's request cycle would)."""

    def call() -> T:
        close_old_connections()
        try:
            return fn(*args)
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_db_pool(), call)


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return cast(bytes, value)
    return None


# -- tokens and sessions -----------------------------------------------------------------
def token_user(raw: str) -> Any:
    """The user of an API token (REST's rules); raises AuthFailed. DB thread."""
    from rest_framework.exceptions import AuthenticationFailed

    from tether.api.auth import token_owner

    try:
        return token_owner(raw)[0]
    except AuthenticationFailed as exc:
        raise AuthFailed(str(exc.detail)) from None


def session_user(key: str) -> Any:
    """The logged-in user of a session (Django's own checks: the session's password
    hash, an active user); raises AuthFailed. DB thread."""
    from django.contrib.auth import get_user

    request = HttpRequest()
    request.session = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = get_user(request)
    if not user.is_authenticated:
        raise AuthFailed("the session has ended; log in again")
    return user


async def user_for_token(raw: str) -> Any | None:
    """The active user an API token belongs to, or None (unknown, expired, revoked)."""
    try:
        return await in_db_thread(token_user, raw)
    except AuthFailed:
        return None


@dataclass(frozen=True)
class Credential:
    """An API token or a session key, kept to be checked again later (REST checks
    every request's)."""

    token: str | None = None
    session: str | None = None

    def user(self) -> Any:
        """The user it stands for now; raises AuthFailed. DB thread."""
        return (
            token_user(self.token) if self.token is not None else session_user(self.session or "")
        )


def header_token(value: bytes) -> str | None:
    """The token of an ``Authorization`` value, None for another scheme (as REST)."""
    parts = value.split()
    if not parts or parts[0].lower() not in (b"token", b"bearer"):
        return None
    if len(parts) != 2:
        raise AuthFailed("malformed Authorization header; use 'Authorization: Token <token>'")
    try:
        return parts[1].decode()
    except UnicodeError:
        raise AuthFailed("token contains invalid characters") from None


def session_key(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    cookies: SimpleCookie = SimpleCookie()
    try:
        cookies.load(raw.decode("latin-1"))
    except CookieError:
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel is not None and morsel.value else None


def scope_credential(scope: Scope) -> Credential | None:
    """The token header's credential, else the session cookie's; None when the request
    carries neither. Raises AuthFailed for a malformed header."""
    value = header(scope, b"authorization")
    token = header_token(value) if value else None
    if token is not None:
        return Credential(token=token)
    key = session_key(scope)
    return Credential(session=key) if key is not None else None


async def scope_user(scope: Scope) -> Any | None:
    """The user of the token header, else of the session cookie. None when the request
    carries neither; raises AuthFailed for a bad one (a bad token is not overruled by a
    cookie, as in REST)."""
    credential = scope_credential(scope)
    return None if credential is None else await in_db_thread(credential.user)


async def authenticate_scope(scope: Scope) -> Any | None:
    """The authenticated user of an HTTP or WebSocket scope, or None."""
    try:
        return await scope_user(scope)
    except AuthFailed:
        return None


# -- origins -----------------------------------------------------------------------------
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(host: str, port: str | int | None, scheme: str) -> tuple[str, int | None]:
    try:
        number = int(port) if port not in (None, "") else DEFAULT_PORTS.get(scheme)
    except ValueError:
        number = None
    return host.strip("[]").lower(), number


def origin_allowed(scope: Scope, allowed: Iterable[str] | None = None) -> bool:
    """Whether a browser page of the request's ``Origin`` may use it: no Origin (not a
    browser), the server's own host (a Host Django accepts, TETHER_ALLOWED_HOSTS, so a
    DNS-rebound name is no match), or one of TETHER_ALLOWED_ORIGINS."""
    raw = header(scope, b"origin")
    if raw is None:
        return True
    origin = raw.decode("latin-1").strip().lower().rstrip("/")
    if allowed is None:
        allowed = cast(tuple[str, ...], settings.TETHER.get("ALLOWED_ORIGINS", ()))
    if origin in allowed:
        return True
    try:
        parts = urlsplit(origin)
        origin_port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (a sandboxed page, a file) and the like
    host = (header(scope, b"host") or b"").decode("latin-1")
    domain, port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    return _host_port(domain, port, parts.scheme) == _host_port(
        parts.hostname, origin_port, parts.scheme
    )
