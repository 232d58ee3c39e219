"""HTTP access to the Tether REST API for the CLI, and the mapping of failures to one
line and an exit code: 1 server refused, 2 usage, 3 server unreachable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

import httpx

from tether import __version__

NOT_LOGGED_IN = "not logged in or token expired/revoked; run `tether login`"
# `tether login` cannot help while TETHER_TOKEN overrides the token it stores
BAD_ENV_TOKEN = (
    "TETHER_TOKEN is invalid, expired or revoked: unset it (to use the token of "
    "`tether login`) or set a valid one"
)
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """Shown as ``tether: <message>`` on stderr; the program exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ApiError(CliError):
    """The server answered with an error status."""

    def __init__(
        self, message: str, status: int, error_code: str = "", body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, EXIT_REFUSED)
        self.status = status
        self.error_code = error_code
        self.body = body or {}


def unreachable(server: str, exc: Exception) -> CliError:
    reason = str(exc) or type(exc).__name__
    return CliError(
        f"cannot reach the Tether server at {server}: {reason}; is `tether serve` "
        "running? (set --server or TETHER_SERVER)",
        EXIT_UNREACHABLE,
    )


def error_of(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    """(code, message, error body) of an error response, tolerating non-JSON answers."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        return "", text or response.reason_phrase, {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", "")), error
    return "", str(body)[:200], {}


class Api:
    """A thin client over ``<server>/api/v1``; every method returns parsed JSON."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        timeout: float = 15.0,
        *,
        token_from_env: bool = False,
    ) -> None:
        self.server = server
        self.token = token
        self.token_from_env = token_from_env
        headers = {"User-Agent": f"tether-cli/{__version__}"}
        self._client = httpx.Client(base_url=f"{server}/api/v1", headers=headers, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, auth: bool) -> dict[str, str]:
        if auth and self.token:  # without a token the server answers 401: NOT_LOGGED_IN
            return {"Authorization": f"Token {self.token}"}
        return {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        task_id: int | None = None,
        data: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``data`` + ``files``: a multipart form; file objects are streamed, not read
        into memory. ``timeout``: seconds to wait for each read (default: the client's)."""
        try:
            response = self._client.request(
                method,
                path,
                json=json,
                params=params,
                headers=self._headers(auth),
                data=data,
                files=files,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None
        if response.status_code >= 400:
            raise self._error(response, auth=auth, task_id=task_id)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(
                f"{self.server} did not answer with JSON (is it a Tether server?)"
            ) from None

    def _error(self, response: httpx.Response, *, auth: bool, task_id: int | None) -> ApiError:
        code, message, body = error_of(response)
        status = response.status_code
        if status == 401 and auth:
            message = BAD_ENV_TOKEN if self.token and self.token_from_env else NOT_LOGGED_IN
        elif status == 404 and task_id is not None:
            message = f"task {task_id} not found"
        elif status == 404 and code == "not_found" and "endpoint" in message:
            message = f"{message} (is {self.server} a Tether server of this version?)"
        elif status >= 500:
            message = f"server error (HTTP {status}): {message}"
        elif not message:
            message = f"HTTP {status}"
        return ApiError(message, status, code, body)

    def download(
        self, path: str, out: BinaryIO, progress: Callable[[int, int | None], None] | None = None
    ) -> int:
        """Stream the body of GET ``path`` into ``out``; returns the bytes written.
        ``progress(done, total)`` is called after each chunk (total from Content-Length)."""
        written = 0
        try:
            with self._client.stream("GET", path, headers=self._headers(True)) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, auth=True, task_id=None)
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    written += len(chunk)
                    if progress is not None:
                        progress(written, total)
        except httpx.TransportError as exc:
            raise unreachable(self.server, exc) from None
        return written

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self.get(f"/tasks/{task_id}", task_id=task_id))

    def task_list(
        self, *, status: str | None = None, type_name: str | None = None, limit: int | None = 50
    ) -> list[dict[str, Any]]:
        """Tasks newest first; ``limit=None`` follows every page."""
        return self.task_list_counted(status=status, type_name=type_name, limit=limit)[0]

    def task_list_counted(
        self, *, status: str | None = None, type_name: str | None = None, limit: int | None = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """(tasks newest first, how many match in all); ``limit=None`` follows every page."""
        page_size = 500 if limit is None else max(1, min(limit, 500))
        params: dict[str, Any] = {"page_size": page_size}
        if status:
            params["status"] = status
        if type_name:
            params["type"] = type_name
        tasks: list[dict[str, Any]] = []
        page = 1
        while True:
            data = self.get("/tasks", params={**params, "page": page})
            tasks.extend(data["results"])
            count = int(data.get("count") or 0)
            if not data.get("next") or (limit is not None and len(tasks) >= limit):
                break
            page += 1
        tasks = tasks if limit is None else tasks[:limit]
        return tasks, max(count, len(tasks))


def connect(ctx: Any) -> Api:
    """An Api for the server chosen by ``--server``/TETHER_SERVER/config (``ctx`` is the
    Typer context; the root command stores ``--server`` in ``ctx.obj``)."""
    from tether.cli.config import resolve

    obj = ctx.find_root().obj if ctx is not None else None
    settings = resolve(obj.get("server") if isinstance(obj, dict) else None)
    return Api(settings.server, settings.token, token_from_env=settings.token_from_env)
