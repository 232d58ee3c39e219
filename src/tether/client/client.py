"""``Client``: the Tether REST API (``<server>/api/v1``) and the live event stream
(``<server>/ws/v1``) from Python. Every call returns the API's parsed JSON or raises a
``tether.client.errors`` error."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable
from typing import Any, BinaryIO, Literal, Protocol

import httpx

from tether import __version__
from tether.client.errors import NotTetherServer, Unauthorized, Unreachable, api_error
from tether.client.follow import FINAL, Follower, Notify, wait_for
from tether.client.pipelines import PipelineCalls
from tether.client.stream import EventStream

DEFAULT_SERVER = "http://127.0.0.1:8000"
Tasks = Iterable[int] | Literal["mine", "all"]


class SupportsRead(Protocol):
    """A binary file to upload: ``read``, and ``seek``/``tell`` or ``fileno`` for its
    length (httpx streams it)."""

    def read(self, size: int = -1, /) -> bytes: ...


def error_of(response: httpx.Response) -> tuple[str, str, Any]:
    """(code, message, error body) of an error response, tolerating non-JSON answers."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return "", text.splitlines()[0][:200] if text else response.reason_phrase, {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", "")), error
    return "", str(body)[:200], {}


class Client(PipelineCalls):
    """A client of one Tether server, authenticated with an API token.

    ``server`` is the base URL (``http://127.0.0.1:8000``); ``token`` comes from
    ``login()`` or ``tether login`` (``None``: only ``register``/``login``/``health``
    work). Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        token: str | None = None,
        *,
        timeout: float = 15.0,
        user_agent: str = f"tether-client/{__version__}",
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.user_agent = user_agent
        self._http = httpx.Client(
            base_url=f"{self.server}/api/v1", headers={"User-Agent": user_agent}, timeout=timeout
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the HTTP layer ------------------------------------------------------------

    def _headers(self, auth: bool) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"} if auth and self.token else {}

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        task_id: int | None = None,
        missing: str | None = None,
        data: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``method`` ``path`` (under ``/api/v1``); the parsed JSON answer, ``None`` when
        empty. ``data`` + ``files``: a multipart form whose file objects are streamed.
        ``task_id`` names the task in a 404's message, ``missing`` (``"pipeline 7"``)
        any other thing. ``timeout``: seconds per read."""
        try:
            response = self._http.request(
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
            raise Unreachable(self.server, str(exc) or type(exc).__name__) from None
        if response.status_code >= 400:
            raise self._error(response, auth=auth, task_id=task_id, missing=missing)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise NotTetherServer(
                f"{self.server} did not answer with JSON (is it a Tether server?)"
            ) from None

    def _error(
        self,
        response: httpx.Response,
        *,
        auth: bool,
        task_id: int | None,
        missing: str | None = None,
    ) -> Exception:
        code, message, body = error_of(response)
        status = response.status_code
        if status == 404 and task_id is not None:
            message = f"task {task_id} not found"
        elif status == 404 and missing and code == "not_found" and "endpoint" not in message:
            message = f"{missing} not found"
        elif status == 404 and code == "not_found" and "endpoint" in message:
            message = f"{message} (is {self.server} a Tether server of this version?)"
        elif status >= 500:
            message = f"server error (HTTP {status}): {message}"
        elif not message:
            message = f"HTTP {status}"
        return api_error(status, code, message, body, token_rejected=auth)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)

    def download(
        self,
        task_id: int,
        out: BinaryIO,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int:
        """Stream the file of a succeeded export task into ``out``; returns the bytes
        written. ``progress(done, total)`` is called after each chunk (total from
        Content-Length)."""
        written = 0
        path = f"/tasks/{task_id}/download"
        try:
            with self._http.stream("GET", path, headers=self._headers(True)) as response:
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
            raise Unreachable(self.server, str(exc) or type(exc).__name__) from None
        return written

    # -- accounts ------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return dict(self.get("/health", auth=False))

    def register(self, username: str, password: str) -> dict[str, Any]:
        body = {"username": username, "password": password}
        return dict(self.post("/auth/register", json=body, auth=False))

    def login(self, username: str, password: str, *, name: str | None = None) -> dict[str, Any]:
        """Get a token (``{token, expires_at}``); this client uses it from now on."""
        body = {"username": username, "password": password}
        if name is not None:
            body["name"] = name
        data = dict(self.post("/auth/token", json=body, auth=False))
        self.token = str(data["token"])
        return data

    def logout(self) -> None:
        """Revoke this client's token on the server."""
        self.post("/auth/logout")

    def me(self) -> dict[str, Any]:
        """The user and the token in use: ``{username, is_staff, token: {...}}``."""
        return dict(self.get("/auth/me"))

    # -- tasks ---------------------------------------------------------------------

    def types(self) -> list[dict[str, Any]]:
        """The task types: name, description, queue, params_schema, supports_pause."""
        return list(self.get("/task-types"))

    def submit(
        self,
        type_name: str,
        params: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        pause_timeout: float | None = None,
    ) -> dict[str, Any]:
        """Start a task of ``type_name``; returns the new task."""
        body: dict[str, Any] = {"type": type_name, "params": params or {}}
        if queue is not None:
            body["queue"] = queue
        if pause_timeout is not None:
            body["pause_timeout"] = pause_timeout
        return dict(self.post("/tasks", json=body))

    def task(self, task_id: int) -> dict[str, Any]:
        """One task: status, params, progress, result, error, attempts, timestamps."""
        return dict(self.get(f"/tasks/{task_id}", task_id=task_id))

    def tasks(
        self, *, status: str | None = None, type_name: str | None = None, limit: int | None = 50
    ) -> list[dict[str, Any]]:
        """Your tasks, newest first (``status``: comma-separated); ``limit=None``: all."""
        return self.tasks_counted(status=status, type_name=type_name, limit=limit)[0]

    def tasks_counted(
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

    def history(self, task_id: int) -> list[dict[str, Any]]:
        """The task's status changes, oldest first: id, from_status, to_status, at,
        actor, reason (the ``id`` is the event id of the stream's status events)."""
        return list(self.get(f"/tasks/{task_id}/events", task_id=task_id))

    def _control(self, action: str, task_id: int, reason: str | None) -> dict[str, Any]:
        body = {"reason": reason} if reason is not None else None
        return dict(self.post(f"/tasks/{task_id}/{action}", json=body, task_id=task_id))

    def pause(self, task_id: int, reason: str | None = None) -> dict[str, Any]:
        """Ask the task to pause at its next checkpoint; returns it (``pausing`` or
        ``paused``). Raises ``Conflict`` when it cannot pause now."""
        return self._control("pause", task_id, reason)

    def resume(self, task_id: int, reason: str | None = None) -> dict[str, Any]:
        return self._control("resume", task_id, reason)

    def cancel(self, task_id: int, reason: str | None = None) -> dict[str, Any]:
        """Cancel the task; its rollback undoes its effects."""
        return self._control("cancel", task_id, reason)

    # -- datasets ------------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        return list(self.get("/datasets"))

    def dataset(self, name: str) -> dict[str, Any]:
        return dict(self.get(f"/datasets/{name}"))

    def dataset_rows(self, name: str, *, limit: int = 10, offset: int = 0) -> dict[str, Any]:
        return dict(self.get(f"/datasets/{name}/rows", params={"limit": limit, "offset": offset}))

    def delete_dataset(self, name: str) -> None:
        self.delete(f"/datasets/{name}")

    def import_csv(
        self,
        file: SupportsRead | str | os.PathLike[str],
        dataset: str,
        *,
        filename: str | None = None,
        timeout: float = 600.0,
        **form: Any,
    ) -> dict[str, Any]:
        """Upload a CSV file (a path, or a binary file object: streamed) into ``dataset``;
        returns the import task.
        ``form``: mode, delimiter, header, null_values, columns, on_error (as the API)."""
        if isinstance(file, str | os.PathLike):
            with open(file, "rb") as handle:
                return self.import_csv(handle, dataset, filename=filename, timeout=timeout, **form)
        name = filename or os.path.basename(str(getattr(file, "name", "data.csv")))
        return dict(
            self.post(
                "/datasets/import",
                data={"dataset": dataset, **{k: v for k, v in form.items() if v is not None}},
                files={"file": (name, file, "text/csv")},
                timeout=timeout,
            )
        )

    def export(self, name: str, **body: Any) -> dict[str, Any]:
        """Start exporting dataset ``name`` to CSV; returns the export task. ``body``:
        columns, from_date, to_date, date_column, raw (as the API)."""
        return dict(self.post(f"/datasets/{name}/export", json=body))

    # -- live ----------------------------------------------------------------------

    def events(
        self,
        tasks: Tasks = "mine",
        since: int | None = None,
        *,
        pipelines: Collection[int] = (),
        retry_for: float | None = 120.0,
        notify: Notify | None = None,
    ) -> EventStream:
        """The live events of ``tasks`` (ids, ``"mine"``, or ``"all"`` for staff) and
        of ``pipelines`` (ids: each pipeline's own events and all its tasks'; pass
        ``tasks=[]`` for those alone) over the WebSocket: an iterator of event dicts,
        connected when returned. Status events after ``since`` (an event id) are
        replayed first. A lost connection (or a close
        4008) is reconnected with ``since`` = the last status event seen, for up to
        ``retry_for`` seconds, so no status event is lost or repeated. Raises
        ``StreamUnavailable`` when the server has no WebSocket stream."""
        if not self.token:  # the server would wait 5 s for an auth frame, then close 4401
            raise Unauthorized("no token: log in first", code="not_authenticated")
        stream = EventStream(
            self.server,
            self.token,
            "mine" if tasks == "mine" else "all" if tasks == "all" else list(tasks),
            since,
            user_agent=self.user_agent,
            retry_for=retry_for,
            notify=notify,
            pipelines=pipelines,
        )
        stream.open()
        return stream

    def follow(
        self,
        task_ids: Collection[int],
        *,
        poll_interval: float = 0.3,
        notify: Notify | None = None,
        retry_for: float = 120.0,
    ) -> Follower:
        """Keep the tasks ``task_ids`` up to date (``.latest``) from the event stream, or
        by polling when the server has none; see ``Follower``."""
        follower = Follower(
            self, task_ids, poll_interval=poll_interval, notify=notify, retry_for=retry_for
        )
        follower.start()
        return follower

    def wait(
        self,
        task_id: int,
        timeout: float | None = None,
        *,
        until: Collection[str] = FINAL,
        poll_interval: float = 0.3,
        notify: Notify | None = None,
        retry_for: float = 120.0,
    ) -> dict[str, Any]:
        """Wait until the task reaches a status in ``until`` (default: it ends) or ends
        otherwise; returns the task. Follows the event stream (polls when the server has
        none). Raises ``WaitTimeout`` after ``timeout`` seconds, ``NotFound``."""
        with self.follow(
            [task_id], poll_interval=poll_interval, notify=notify, retry_for=retry_for
        ) as follower:
            return wait_for(follower, task_id, set(until), timeout)
