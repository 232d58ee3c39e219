"""Fixtures for the Celery executor with real processes, on PostgreSQL + Redis (shared by
test_celery.py and test_celery_faults.py; registered for this folder in conftest.py).

``pg_database`` creates a fresh PostgreSQL database (dropped at teardown). ``services``
adds the shared Redis on 6379; ``celery_env`` is the environment every process of a test
gets (a test module may override it, e.g. with a private broker). ``worker()`` starts a
``tether worker`` with that environment. ``PrivateRedis`` is a ``redis-server`` of the
test's own, on a free port and keeping nothing on disk, that a test may kill and
restart. Without the services these fixtures skip, and under CI=true they fail.

This module uses helpers of ``tests.acceptance.conftest``, which imports it last (to
register the fixtures): import that conftest first, as pytest does.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from tests.acceptance.conftest import TETHER, free_port, server_env, wait_until
from tests.conftest import IN_CI, require_port

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/12"
LOG_TAIL = 20_000
STOP_TIMEOUT = 15.0


@pytest.fixture
def pg_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped (connections and all) at the end."""
    require_port("PostgreSQL", 5432)
    name = f"tether_acc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{PG}/{name}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def services(pg_database: str) -> dict[str, str]:
    """PostgreSQL (a fresh database) + the shared Redis on 6379 (database 12, flushed)."""
    require_port("Redis", 6379)
    import redis

    redis.Redis.from_url(REDIS).flushdb()
    return {
        "TETHER_DATABASE_URL": pg_database,
        "TETHER_BROKER_URL": REDIS,
        "TETHER_LEASE_SECONDS": "3",
        "TETHER_REPUBLISH_SECONDS": "2",
    }


@pytest.fixture
def celery_env(services: dict[str, str]) -> dict[str, str]:
    """The environment of the server and the workers of a test (override per module)."""
    return services


class Workers:
    """``tether worker`` processes of one test. Call it to start one (it returns once the
    worker is ready); every worker still alive is stopped at teardown."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}
        self.hung: list[int] = []  # pids that did not exit in time after a signal

    def __call__(
        self, *args: str, concurrency: int = 2, wait: bool = True, **env: str
    ) -> subprocess.Popen[bytes]:
        """Start a worker (``args``: more options, ``env``: more environment); with
        ``wait=False`` return at once (``ready(proc)`` tells when it consumes)."""
        log = self.home / f"worker-{len(self.procs) + 1}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(TETHER), "worker", "-c", str(concurrency), *args],
                cwd=self.home,
                env=server_env(self.home, **{**self.env, **env}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs[proc.pid] = log
        if wait:
            self.wait_ready(proc)
        return proc

    def ready(self, proc: subprocess.Popen[bytes]) -> bool:
        return proc.poll() is None and "ready." in self.output(proc)

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        wait_until(
            lambda: self.ready(proc) or proc.poll() is not None,
            f"worker pid {proc.pid} ready",
            timeout=30,
        )
        assert proc.poll() is None, self.output(proc)

    @staticmethod
    def worker_id_suffix(proc: subprocess.Popen[bytes]) -> str:
        """The end of the id a worker process stamps on the tasks it holds."""
        return f"{socket.gethostname()}:{proc.pid}"

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker process (every thread of it): no cleanup at all."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> float:
        """SIGTERM (Celery's warm shutdown) and wait; see ``wait_exit``."""
        return self.signal([proc], signal.SIGTERM, timeout)

    def signal(
        self,
        procs: list[subprocess.Popen[bytes]],
        signum: signal.Signals,
        timeout: float = STOP_TIMEOUT,
    ) -> float:
        """Send ``signum`` to all of ``procs`` at once, then wait for each to exit (see
        ``wait_exit``). Returns the seconds it took."""
        began = time.monotonic()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)
        for proc in procs:
            self.wait_exit(proc, max(0.0, began + timeout - time.monotonic()))
        return time.monotonic() - began

    def wait_exit(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for ``proc`` to exit; if it does not in time, have Celery print every
        thread's stack to its log (SIGUSR1), SIGKILL it and remember it in ``hung``."""
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
        self.hung.append(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGUSR1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        log = self.logs[proc.pid]
        return log.read_text(errors="replace") if log.exists() else ""

    def stop_all(self) -> None:
        self.signal(self.alive(), signal.SIGTERM)


@pytest.fixture
def worker(
    tmp_path: Path, celery_env: dict[str, str], request: pytest.FixtureRequest
) -> Iterator[Workers]:
    workers = Workers(tmp_path, celery_env)
    yield workers
    workers.stop_all()
    for i, proc in enumerate(workers.procs, 1):
        hung = " (did not exit in time: SIGKILLed)" if proc.pid in workers.hung else ""
        request.node.add_report_section(
            "teardown", f"worker {i} (pid {proc.pid}) log{hung}", workers.output(proc)[-LOG_TAIL:]
        )


WorkerFactory = Workers


class PrivateRedis:
    """A ``redis-server`` of one test on a free port, keeping nothing on disk: killing it
    loses every message, as a broker restart without persistence does."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> PrivateRedis:
        assert not self.running, "already running"
        self.starts += 1
        self._close_log()
        self._log = open(self.workdir / f"redis-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: self.ping() or self.proc is None or self.proc.poll() is not None,
            f"redis-server on port {self.port}",
            timeout=10,
        )
        assert self.running, (self.workdir / f"redis-{self.starts}.log").read_text()
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker is gone, with every message it held."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close_log()

    def restart(self) -> PrivateRedis:
        self.kill()
        return self.start()

    def queued_messages(self, queue: str = "default") -> int:
        import redis

        return int(redis.Redis(port=self.port, socket_timeout=2).llen(queue))

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A running PrivateRedis, killed at teardown."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(message + " (required under CI=true)")
        pytest.skip(message)
    broker = PrivateRedis(tmp_path).start()
    yield broker
    broker.kill()


def pg_rows(env: dict[str, str], task_id: int) -> list[int]:
    """Steps recorded in acc_ledger for ``task_id``."""
    with psycopg.connect(env["TETHER_DATABASE_URL"]) as conn:
        exists = conn.execute("SELECT to_regclass('acc_ledger')").fetchone()
        if not exists or exists[0] is None:
            return []
        rows = conn.execute(
            "SELECT step FROM acc_ledger WHERE task_id = %s ORDER BY step", [task_id]
        ).fetchall()
    return [r[0] for r in rows]


def pg_query(env: dict[str, str], sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one read-only query on the test's database."""
    with psycopg.connect(env["TETHER_DATABASE_URL"]) as conn:
        return list(conn.execute(sql, params).fetchall())
