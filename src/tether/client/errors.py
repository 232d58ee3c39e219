"""What the client raises: one base class, a subclass per kind of failure, each with a
readable ``message``. Errors the server answered carry its ``{"error": {"code",
"message", ...}}`` as ``status``, ``code``, ``message`` and ``body``."""

from __future__ import annotations

from typing import Any


class TetherError(Exception):
    """Base class of everything the client raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(TetherError):
    """The server could not be reached (refused, reset, timed out, name not found)."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"cannot reach the Tether server at {server}: {reason}")
        self.server = server
        self.reason = reason


class NotTetherServer(TetherError):
    """The server answered something that is not the Tether API (not JSON, a bad frame)."""


class StreamUnavailable(TetherError):
    """The server has no WebSocket event stream (an older server, or a proxy in between
    that does not pass WebSockets): callers poll instead."""


class ApiError(TetherError):
    """The server refused the request: ``status`` is the HTTP status (for a WebSocket
    reply, the status REST would have answered), ``code`` and ``message`` the API's."""

    status = 400

    def __init__(
        self, message: str, *, status: int | None = None, code: str = "", body: Any = None
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.code = code
        self.body: dict[str, Any] = body if isinstance(body, dict) else {}


class BadRequest(ApiError):
    """400: bad input (``body["fields"]`` names the fields when there are any)."""


class Unauthorized(ApiError):
    """401. ``token_rejected`` is True when the request needed the client's token and the
    server refused it (missing, invalid, expired or revoked); False for a failed login."""

    status = 401

    def __init__(self, message: str, *, token_rejected: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.token_rejected = token_rejected


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    """409: not possible in the task's current status (``current_status`` names it)."""

    status = 409

    @property
    def current_status(self) -> str | None:
        value = self.body.get("status")
        return str(value) if value is not None else None


class TooManyRequests(ApiError):
    """429, or a WebSocket closed because the user has too many connections."""

    status = 429


class ServerError(ApiError):
    status = 500


class WaitTimeout(TetherError, TimeoutError):
    """``Client.wait`` gave up; ``task`` is the task as last seen."""

    def __init__(self, seconds: float, task: dict[str, Any]) -> None:
        super().__init__(f"timed out after {seconds:g}s: task {task.get('id')} is {task['status']}")
        self.seconds = seconds
        self.task = task


def api_error(
    status: int, code: str, message: str, body: Any = None, *, token_rejected: bool = True
) -> ApiError:
    """The ApiError subclass for an HTTP ``status``."""
    if status == 401:
        return Unauthorized(
            message, status=status, code=code, body=body, token_rejected=token_rejected
        )
    kind: type[ApiError] = {
        400: BadRequest,
        403: Forbidden,
        404: NotFound,
        409: Conflict,
        429: TooManyRequests,
    }.get(status, ServerError if status >= 500 else ApiError)
    return kind(message, status=status, code=code, body=body)


# Error codes of WebSocket replies whose HTTP status is not 400 (as REST would answer).
REPLY_STATUS = {
    "not_authenticated": 401,
    "authentication_failed": 401,
    "permission_denied": 403,
    "forbidden": 403,
    "not_found": 404,
    "illegal_transition": 409,
    "throttled": 429,
    "too_many_requests": 429,
    "broker_unavailable": 503,
    "server_error": 500,
}


def reply_error(error: Any) -> ApiError:
    """The ApiError of a WebSocket reply's ``error`` object."""
    error = error if isinstance(error, dict) else {}
    code = str(error.get("code") or "error")
    message = str(error.get("message") or code)
    return api_error(REPLY_STATUS.get(code, 400), code, message, error)
