"""Acceptance fixtures: the real ``tether serve`` program as a subprocess, real HTTP.

``server()`` starts a server on a free port with its own TETHER_HOME and the test-only
task types of ``tests.acceptance.tasks``; ``Server.kill()``/``restart()`` simulate a
crash and a new start on the same home. ``login(server)`` registers a fresh user and
returns an authenticated ``httpx.Client``; ``wait_for`` polls a task's status.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TETHER = next(
    (
        p
        for p in (REPO / ".venv" / "bin" / "tether", Path(sys.executable).parent / "tether")
        if p.exists()
    ),
    REPO / ".venv" / "bin" / "tether",
)
PASSWORD = "Accept-Pass-9876"
START_TIMEOUT = 60.0  # a loaded 2-core machine
STOP_TIMEOUT = 15.0
_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for a ``tether`` subprocess using ``home`` as its TETHER_HOME."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TETHER_") and k not in ("PORT", "DJANGO_SETTINGS_MODULE")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(
        TETHER_HOME=str(home),
        TETHER_TASK_MODULES="tests.acceptance.tasks",
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def run_tether(
    home: Path, *args: str, timeout: float = 60.0, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a short ``tether`` command to completion."""
    return subprocess.run(
        [str(TETHER), *args],
        cwd=home,
        env=server_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Server:
    """One ``tether serve`` process (restartable on the same TETHER_HOME)."""

    def __init__(
        self, home: Path, workers: int, log_dir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.home = home
        self.workers = workers
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.home / "tether.sqlite3"

    def start(self, same_port: bool = False) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if not (same_port and self.port):
            self.port = free_port()
        log = self.log_dir / f"server-{next(_ids)}-stderr.log"
        self.logs.append(log)
        self._log = open(log, "wb")  # noqa: SIM115 - closed in _reap
        self.proc = subprocess.Popen(
            [str(TETHER), "serve", "--port", str(self.port), "--workers", str(self.workers)],
            cwd=self.home,
            env=server_env(self.home, **self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self._reap()
                pytest.fail(
                    f"tether serve exited with {self.proc.returncode} before it was "
                    f"ready:\n{self.stderr()}"
                )
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"tether serve not healthy after {START_TIMEOUT:g}s:\n{self.stderr()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, no cleanup at all."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        self._reap()

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        self._reap()
        return self.proc.returncode

    def restart(self, same_port: bool = False) -> Server:
        self.stop()
        return self.start(same_port)

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stderr(self) -> str:
        parts = []
        for log in self.logs:
            text = log.read_text(errors="replace") if log.exists() else ""
            parts.append(f"--- {log.name} ---\n{text}")
        return "\n".join(parts)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=15)

    def lease_of(self, task_id: int) -> str | None:
        """The task's lease expiry, read straight from SQLite (renewed by each
        maintenance round while a worker holds the task)."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute(
                "SELECT lease_expires_at FROM tether_task WHERE id = ?", (task_id,)
            ).fetchone()
        finally:
            con.close()
        return row[0] if row else None

    def ledger_rows(self, task_id: int) -> list[int]:
        """Steps recorded in acc_ledger for ``task_id``, read straight from SQLite."""
        con = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            exists = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='acc_ledger'"
            ).fetchone()
            if not exists:
                return []
            rows = con.execute(
                "SELECT step FROM acc_ledger WHERE task_id = ? ORDER BY step", (task_id,)
            ).fetchall()
        finally:
            con.close()
        return [r[0] for r in rows]


ServerFactory = Callable[..., Server]


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Factory: ``server(workers=2, home=None, **env)`` starts a ``tether serve`` (extra
    environment variables in ``env``); every server is stopped at teardown and its stderr
    is attached to the report (shown on failure)."""
    started: list[Server] = []

    def start(workers: int = 2, home: Path | None = None, **env: str) -> Server:
        if home is None:
            home = tmp_path / f"home-{len(started) + 1}"
            home.mkdir()
        srv = Server(home, workers, tmp_path, env)
        started.append(srv)
        return srv.start()

    yield start
    for srv in started:
        srv.stop()
        request.node.add_report_section(
            "teardown", f"tether serve stderr ({srv.home.name})", srv.stderr()
        )


def login(srv: Server, username: str | None = None) -> httpx.Client:
    """Register a new user, get a token, return a client authenticated with it."""
    username = username or f"user-{uuid.uuid4().hex[:10]}"
    with srv.client() as anon:
        r = anon.post("/auth/register", json={"username": username, "password": PASSWORD})
        assert r.status_code == 201, r.text
        assert r.json() == {"username": username}
        r = anon.post("/auth/token", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        token = r.json()["token"]
    return srv.client(token)


def get_task(client: httpx.Client, task_id: int) -> dict[str, Any]:
    r = client.get(f"/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def submit(
    client: httpx.Client, type_name: str, params: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    r = client.post("/tasks", json={"type": type_name, "params": params, **extra})
    assert r.status_code == 201, r.text
    return dict(r.json())


def wait_for(
    client: httpx.Client, task_id: int, statuses: str | Collection[str], timeout: float = 30.0
) -> dict[str, Any]:
    """Poll GET /tasks/{id} until its status is one of ``statuses``; return the task."""
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        task = get_task(client, task_id)
        if not seen or seen[-1] != task["status"]:
            seen.append(task["status"])
        if task["status"] in wanted:
            return task
        if time.monotonic() > deadline:
            pytest.fail(
                f"task {task_id} not {sorted(wanted)} after {timeout:g}s; "
                f"statuses seen: {seen}; last: {task}"
            )
        time.sleep(0.05)


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def wait_progress(
    client: httpx.Client, task_id: int, at_least: float, timeout: float = 30.0
) -> dict[str, Any]:
    """Wait until the task reports ``progress.done >= at_least`` (while it runs)."""

    def check() -> dict[str, Any] | None:
        task = get_task(client, task_id)
        assert task["status"] in ("queued", "running"), task
        return task if (task["progress"] or {}).get("done", 0) >= at_least else None

    return dict(wait_until(check, f"task {task_id} progress >= {at_least}", timeout))


def events(client: httpx.Client, task_id: int) -> list[dict[str, Any]]:
    r = client.get(f"/tasks/{task_id}/events")
    assert r.status_code == 200, r.text
    return list(r.json())


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """``r`` is ``status`` with the documented body ``{"error": {"code", "message"}}``."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"], body
    assert isinstance(error["message"], str) and error["message"], body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


def assert_event_chain(history: list[dict[str, Any]]) -> None:
    """A task's history is one unbroken chain of moves, each with an actor, a reason
    and a time."""
    assert history[0]["from_status"] is None
    for prev, e in pairwise(history):
        assert e["from_status"] == prev["to_status"], history
    for e in history:
        assert isinstance(e["actor"], str) and e["actor"], e
        assert isinstance(e["reason"], str) and e["reason"], e
        assert e["at"], e


def ledger_steps(database_url: str, task_id: int) -> list[int]:
    """Steps the ``ledger`` task type recorded in ``acc_ledger`` for ``task_id``."""
    rows = db_rows(
        database_url,
        "acc_ledger",
        "SELECT step FROM acc_ledger WHERE task_id = {} ORDER BY step",
        task_id,
    )
    return [int(r[0]) for r in rows]


def db_rows(database_url: str, table: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` (``{}`` marks each parameter), read straight from the database
    a deployment uses: ``sqlite:///PATH``, ``postgres://…`` (``postgresql://``) or
    ``mysql://…`` (MariaDB). A missing ``table`` (the task types that create it have
    not run yet) means no rows."""
    from urllib.parse import unquote, urlsplit

    url = urlsplit(database_url)
    if url.scheme == "sqlite":
        path = Path(unquote(url.path[1:])).resolve()  # sqlite:////abs or sqlite:///rel
        con = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            if not con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone():
                return []
            return con.execute(query.format(*["?"] * len(params)), params).fetchall()
        finally:
            con.close()
    marks = query.format(*["%s"] * len(params))
    if url.scheme in ("postgres", "postgresql"):
        import psycopg

        with psycopg.connect(
            database_url.replace("postgres://", "postgresql://", 1), autocommit=True
        ) as pg:
            found = pg.execute("SELECT to_regclass(%s)", [table]).fetchone()
            if not found or found[0] is None:
                return []
            return [tuple(r) for r in pg.execute(marks, params).fetchall()]
    if url.scheme in ("mysql", "mariadb"):
        import pymysql

        my = pymysql.connect(
            host=url.hostname or "127.0.0.1",
            port=url.port or 3306,
            user=unquote(url.username or "root"),
            password=unquote(url.password or ""),
            database=url.path.lstrip("/"),
            autocommit=True,
        )
        try:
            with my.cursor() as cur:
                cur.execute(
                    "SELECT 1 FROM information_schema.tables WHERE table_schema = "
                    "DATABASE() AND table_name = %s",
                    [table],
                )
                if not cur.fetchone():
                    return []
                cur.execute(marks, params)
                return [tuple(r) for r in cur.fetchall()]
        finally:
            my.close()
    raise ValueError(f"db_rows: unsupported database URL {database_url!r}")


# The Celery fixtures (PostgreSQL + Redis, `tether worker`) for every test in this folder.
# Imported last: that module uses the helpers above.
from tests.acceptance.celery_fixtures import (  # noqa: E402, F401
    celery_env,
    pg_database,
    private_redis,
    services,
    worker,
)
