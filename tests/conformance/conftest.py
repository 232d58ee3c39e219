"""Conformance fixtures: every supported deployment, driven only through its HTTP API,
so that one suite (``test_contract.py``) checks the same contract (DESIGN.md, "The
contract") with the same assertions everywhere.

``deployment`` is parametrized and package-scoped: pytest groups the tests of this
folder's modules (test_contract.py, test_events.py) by deployment, so each one is
started once, used by every test and torn down afterwards. While one deployment is
being tested, the next one the session needs starts in the background (``Prestarter``).

- ``embedded-sqlite``: ``tether serve`` running tasks in 2 embedded slots, on SQLite.
- ``celery-postgresql-redis``, ``celery-postgresql-rabbitmq``, ``celery-mariadb-redis``:
  a fresh database, ``tether serve`` (API only), two ``tether worker -c 2`` processes
  serving every queue of the registered task types and one ``tether worker -Q gpu
  -c 1`` (pipeline steps sent to queue ``gpu`` run there only), with short leases
  (3 s) and re-publishing (2 s). Each has a TETHER_HOME of its own (another machine)
  and one shared TETHER_DATA_DIR (uploads, exports).

A deployment whose services are unreachable is skipped locally and fails under CI=true.
Everything is released at teardown, also when a start fails half-way: processes are
terminated, the database dropped, the broker emptied (Redis db 14, or
CONFORMANCE_REDIS_URL for a second session at the same time; a RabbitMQ vhost of its
own, or the default vhost's queues purged when ``rabbitmqctl`` is not usable).

Each test gets a fresh user (``api``); at teardown its unfinished tasks are cancelled
and waited for, so the next test finds every worker slot free. The servers hash
passwords with MD5 (``fast_passwords.py``), like the in-process tests.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import (  # noqa: F401  (assert_error: re-exported)
    STOP_TIMEOUT,
    TETHER,
    Server,
    assert_error,
    db_rows,
    ledger_steps,
    login,
    server_env,
    submit,
    wait_for,
    wait_progress,
    wait_until,
)
from tests.conftest import require_port

PG = "postgres://postgres@127.0.0.1:5432"
MARIADB = "mysql://root@127.0.0.1:3306"
# no other test uses this database number; a second session running at the same time
# on the same machine needs one of its own (their workers would take each other's tasks)
REDIS = os.environ.get("CONFORMANCE_REDIS_URL", "redis://127.0.0.1:6379/14")
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672"
QUEUES = ("default", "render", "data", "gpu")  # the queues the suite submits to
GPU_QUEUE = "gpu"  # no task type's own queue: only the gpu worker serves it

EMBEDDED_SLOTS = 2
WORKERS = 2
WORKER_CONCURRENCY = 2
GPU_CONCURRENCY = 1
# every test registers and logs in fresh users: no rate limit, fast password hashing
# imports load 500-row batches, each 20 ms late, so that a test can catch one midway
COMMON_ENV = {
    "TETHER_AUTH_RATE": "100000/min",
    "TETHER_APPS": "tests.conformance.fast_passwords,tests.acceptance.dataset_knobs.DatasetKnobs",
    "TETHER_CANCEL_GRACE_SECONDS": "1",
    "ACC_IMPORT_BATCH_ROWS": "500",
    "ACC_IMPORT_BATCH_DELAY_MS": "20",
}
CELERY_ENV = {"TETHER_LEASE_SECONDS": "3", "TETHER_REPUBLISH_SECONDS": "2"}

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running", "pausing", "paused", "cancelling")
LOG_TAIL_LINES = 120


@dataclass(frozen=True)
class Spec:
    name: str
    database: str  # sqlite | postgresql | mariadb
    broker: str | None  # None: the embedded executor; else redis | rabbitmq


SPECS = [
    Spec("embedded-sqlite", "sqlite", None),
    Spec("celery-postgresql-redis", "postgresql", "redis"),
    Spec("celery-postgresql-rabbitmq", "postgresql", "rabbitmq"),
    Spec("celery-mariadb-redis", "mariadb", "redis"),
]


def new_username() -> str:
    """Random, and never "too similar" to the password (Django's similarity validator
    refuses e.g. ``user-c7ac9da680`` for ``Accept-Pass-9876``): no character in common."""
    return "u" + "".join(random.choices("bdfghijklmnoqruvwxyz012345", k=12))


def unique_name() -> str:
    return f"tether_conf_{uuid.uuid4().hex[:10]}"


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Worker:
    """One ``tether worker`` process with its own TETHER_HOME (another machine),
    serving ``queues`` (default: every queue of the registered task types)."""

    def __init__(
        self,
        home: Path,
        env: dict[str, str],
        queues: str | None = None,
        concurrency: int = WORKER_CONCURRENCY,
    ) -> None:
        self.home = home
        self.env = env
        self.queues = queues
        self.concurrency = concurrency
        self.log = home / "worker.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def worker_id(self) -> str:
        """How the worker names itself in the events of the tasks it claims."""
        assert self.proc is not None
        return f"celery:{socket.gethostname()}:{self.proc.pid}"

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        queues = ["-Q", self.queues] if self.queues else []
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(TETHER), "worker", "-c", str(self.concurrency), *queues],
                cwd=self.home,
                env=server_env(self.home, **self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        if not self.alive():
            pytest.fail(
                f"tether worker in {self.home.name} exited before it was ready:\n{tail(self.log)}"
            )
        return "ready." in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: a lost machine, no cleanup at all."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)

    def terminate(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


def stop_processes(server: Server, workers: list[Worker]) -> None:
    """SIGTERM everything at once (workers hand their running tasks back, the server
    stops its executor), then wait for each; SIGKILL what does not exit in time."""
    for w in workers:
        w.terminate()
    server.stop()
    for w in workers:
        w.wait()


@dataclass
class Deployment:
    name: str
    server: Server
    database_url: str
    slots: int  # tasks that can run at once
    workers: list[Worker]
    broker_url: str | None = None  # None: the embedded executor

    def login(self) -> httpx.Client:
        """A new user, registered and logged in through the API."""
        return login(self.server, new_username())

    def ledger(self, task_id: int) -> list[int]:
        """The steps the ``ledger`` task ``task_id`` has committed, read from the DB."""
        return ledger_steps(self.database_url, task_id)

    def pipeline_ledger(self, pipeline_id: int) -> list[tuple[str, str, int]]:
        """``(what, label, task id)`` for each run, undo or fail the pipeline step types
        (tests/acceptance/pipeline_steps.py) recorded in ``pipeline_id``, in order."""
        rows = db_rows(
            self.database_url,
            "acc_pipeline_ledger",
            "SELECT what, label, task_id FROM acc_pipeline_ledger WHERE pipeline_id = {} "
            "ORDER BY id",
            pipeline_id,
        )
        return [(str(what), str(label), int(task)) for what, label, task in rows]

    def assert_alive(self) -> None:
        proc = self.server.proc
        dead = [] if proc is not None and proc.poll() is None else ["tether serve"]
        dead += [f"tether worker in {w.home.name}" for w in self.workers if not w.alive()]
        assert not dead, f"{self.name}: process(es) died: {dead}\n{self.logs()}"

    def logs(self) -> str:
        parts = [
            f"--- {log.name} (last {LOG_TAIL_LINES} lines) ---\n{tail(log)}"
            for log in self.server.logs
        ]
        parts += [
            f"--- {w.home.name}/worker.log (last {LOG_TAIL_LINES} lines) ---\n{tail(w.log)}"
            for w in self.workers
        ]
        return "\n".join(parts)


# -- services -----------------------------------------------------------------------
def _postgresql(stack: ExitStack) -> str:
    require_port("PostgreSQL", 5432)
    import psycopg

    name = unique_name()
    admin = f"{PG.replace('postgres://', 'postgresql://', 1)}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    return f"{PG}/{name}"


def _mariadb(stack: ExitStack) -> str:
    require_port("MariaDB", 3306)
    import pymysql

    name = unique_name()

    def admin(sql: str) -> None:
        conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    stack.callback(admin, f"DROP DATABASE IF EXISTS `{name}`")
    return f"{MARIADB}/{name}"


def _redis(stack: ExitStack) -> str:
    require_port("Redis", 6379)
    import redis

    def flush() -> None:
        with redis.Redis.from_url(REDIS) as client:
            client.flushdb()

    flush()  # messages a killed earlier run left behind
    stack.callback(flush)
    return REDIS


def _rabbitmqctl(*args: str) -> bool:
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        return False
    try:
        return (
            subprocess.run([exe, *args], capture_output=True, timeout=60, check=False).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _purge(url: str, queues: tuple[str, ...] = QUEUES) -> None:
    """Drop every message waiting in ``queues`` of the broker at ``url``."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        for queue in queues:
            channel = conn.channel()  # a missing queue closes the channel: one each
            with suppress(Exception):  # the queue does not exist (yet): nothing to purge
                channel.queue_purge(queue)
            with suppress(Exception):  # already closed by the broker
                channel.close()


def _rabbitmq(stack: ExitStack) -> str:
    """A vhost of its own (deleted at the end, with every queue and message in it); the
    default vhost, purged before and after, where ``rabbitmqctl`` cannot be used."""
    require_port("RabbitMQ", 5672)
    vhost = unique_name()
    if _rabbitmqctl("add_vhost", vhost):
        stack.callback(_rabbitmqctl, "delete_vhost", vhost)
        if _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
            return f"{RABBITMQ}/{vhost}"
    url = f"{RABBITMQ}//"
    _purge(url)
    stack.callback(_purge, url)
    return url


def start_deployment(spec: Spec, root: Path, stack: ExitStack) -> Deployment:
    env = dict(COMMON_ENV)
    home = root / "server"
    home.mkdir()
    env["TETHER_DATA_DIR"] = str(root / "data")  # uploads, exports: shared storage
    if spec.database == "sqlite":
        database_url = f"sqlite:///{home / 'tether.sqlite3'}"
    else:
        database_url = (_postgresql if spec.database == "postgresql" else _mariadb)(stack)
        env["TETHER_DATABASE_URL"] = database_url
    workers: list[Worker] = []
    if spec.broker is not None:
        env.update(
            CELERY_ENV, TETHER_BROKER_URL=(_redis if spec.broker == "redis" else _rabbitmq)(stack)
        )
        workers = [Worker(root / f"worker-{i + 1}", env) for i in range(WORKERS)]
        workers.append(Worker(root / "worker-gpu", env, GPU_QUEUE, GPU_CONCURRENCY))
    server = Server(home, EMBEDDED_SLOTS, root, env)
    stack.callback(stop_processes, server, workers)
    # The workers boot (about 3 s) while `tether migrate` runs (about 2 s); they
    # query the tables only from 1 s after they are ready. The server is started on
    # migrated tables (its start-up deadline is short for a loaded machine).
    for w in workers:
        w.start()
    migrated = subprocess.run(
        [str(TETHER), "migrate"],
        cwd=home,
        env=server_env(home, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    server.start()
    wait_until(lambda: all(w.ready() for w in workers), "workers ready", timeout=60)
    health = httpx.get(f"{server.url}/api/v1/health", timeout=10).json()
    assert health["executor"] == ("embedded" if spec.broker is None else "celery"), health
    assert health["database"] == {"mariadb": "mysql"}.get(spec.database, spec.database), health
    slots = EMBEDDED_SLOTS if spec.broker is None else WORKERS * WORKER_CONCURRENCY
    return Deployment(spec.name, server, database_url, slots, workers, env.get("TETHER_BROKER_URL"))


class Prestarter:
    """Starts the deployment the next tests need in a background thread while the
    current one is being tested (start-up is mostly waiting for processes to boot).
    Two deployments that share a broker (Redis db 14) never run at the same time."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prestart")
        self.pending: dict[str, tuple[Future[Deployment], ExitStack]] = {}

    def begin(self, spec: Spec, root: Path) -> None:
        stack = ExitStack()
        self.pending[spec.name] = (self.pool.submit(start_deployment, spec, root, stack), stack)

    def take(self, spec: Spec) -> tuple[Deployment, ExitStack] | None:
        """The deployment started for ``spec`` (its start's error is raised here), or None."""
        if spec.name not in self.pending:
            return None
        future, stack = self.pending.pop(spec.name)
        try:
            return future.result(), stack
        except BaseException:  # also pytest's skip/fail outcomes: release, then re-raise
            stack.close()
            raise

    def close(self) -> None:
        for name in list(self.pending):
            future, stack = self.pending.pop(name)
            with suppress(BaseException):
                future.result()
            stack.close()
        self.pool.shutdown()


def session_specs(session: pytest.Session) -> list[Spec]:
    """The deployments this session's tests use, in the order they use them."""
    specs: list[Spec] = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        spec = callspec.params.get("deployment") if callspec is not None else None
        if isinstance(spec, Spec) and spec not in specs:
            specs.append(spec)
    return specs


def shares_services(a: Spec, b: Spec) -> bool:
    return a.broker == "redis" and b.broker == "redis"


@pytest.fixture(scope="session")
def prestarter() -> Iterator[Prestarter]:
    starter = Prestarter()
    try:
        yield starter
    finally:
        starter.close()


@pytest.fixture(scope="package", params=SPECS, ids=lambda spec: spec.name)
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prestarter: Prestarter
) -> Iterator[Deployment]:
    spec: Spec = request.param
    order = session_specs(request.session)
    with ExitStack() as stack:
        started = prestarter.take(spec)
        if started is None:
            dep = start_deployment(spec, tmp_path_factory.mktemp(spec.name), stack)
        else:
            dep = started[0]
            stack.enter_context(started[1])
        following = order[order.index(spec) + 1 :] if spec in order else []
        if following and not shares_services(spec, following[0]):
            prestarter.begin(following[0], tmp_path_factory.mktemp(following[0].name))
        yield dep


@pytest.fixture
def api(deployment: Deployment) -> Iterator[httpx.Client]:
    """A fresh user's client. Teardown cancels the user's unfinished tasks and waits
    until they are final, so they cannot hold a slot of the next test."""
    deployment.assert_alive()
    client = deployment.login()
    try:
        yield client
        deployment.assert_alive()
    finally:
        try:
            if all(w.alive() for w in deployment.workers):
                settle(client)
        finally:
            client.close()


def settle(client: httpx.Client, timeout: float = 30.0) -> None:
    r = client.get("/tasks", params={"status": ",".join(ACTIVE), "page_size": 100})
    assert r.status_code == 200, r.text
    ids = [t["id"] for t in r.json()["results"]]
    for task_id in ids:
        client.post(f"/tasks/{task_id}/cancel")  # 409 when it is already cancelling
    for task_id in ids:
        wait_for(client, task_id, FINAL, timeout=timeout)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report shows the tail of its deployment's process logs."""
    report = yield
    dep = getattr(item, "funcargs", {}).get("deployment")
    if report.failed and isinstance(dep, Deployment):
        report.sections.append((f"{dep.name} process logs", dep.logs()))
    return report


# -- helpers for the tests -----------------------------------------------------------
def statuses(history: list[dict[str, Any]]) -> list[str]:
    return [e["to_status"] for e in history]


def task_ids(client: httpx.Client, **query: str) -> list[int]:
    """Ids of GET /tasks with ``query`` (one page is enough for these tests)."""
    r = client.get("/tasks", params={**query, "page_size": 100})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(body["results"]), body
    return [t["id"] for t in body["results"]]


def wait_ledger(dep: Deployment, task_id: int, at_least: int, timeout: float = 30.0) -> list[int]:
    """Wait until the running ``ledger`` task has committed ``at_least`` steps."""
    return list(
        wait_until(
            lambda: (rows := dep.ledger(task_id)) and len(rows) >= at_least and rows,
            f"task {task_id}: {at_least} ledger rows",
            timeout,
        )
    )


# Claim-ahead (executors/board.py, Pace): after short tasks an executor claims more
# tasks than it has free threads, as many as its recent average task duration suggests.
# The embedded executor (embedded.py, _wanted) then claims a task into ``running`` even
# while every slot is held by a long task, and a cancel of that task stays ``cancelling``
# until a slot frees. A Celery worker (celery_executor.py, WorkerRuntime.execute) claims
# such a batch in one thread and runs it one task after the other, so a long task
# batched behind another shows ``running`` without running while other threads idle.
# test_contract.py, test_after_short_tasks_long_ones_start_at_once_and_the_next_one_
# waits_queued, shows both. ``all_slots_busy`` avoids them: it first finishes a task of
# PRIMER_SECONDS (the average is then long enough for a claim-ahead of zero) and starts
# its blockers one at a time (no batch can hold two).
PRIMER_SECONDS = 0.3


@contextmanager
def all_slots_busy(dep: Deployment, client: httpx.Client) -> Iterator[list[int]]:
    """Occupy every worker slot of ``dep`` with a long countdown, each seen executing
    before the next is submitted: a task submitted inside the block waits for a slot.
    The blockers are cancelled at the end and waited for, which frees the slots again."""
    primer = submit(client, "countdown", {"seconds": PRIMER_SECONDS})["id"]
    assert wait_for(client, primer, FINAL)["status"] == "succeeded"
    blockers: list[int] = []
    try:
        for _ in range(dep.slots):
            blockers.append(submit(client, "countdown", {"seconds": 600, "tick_ms": 20})["id"])
            wait_progress(client, blockers[-1], 1)  # it runs: a thread of its own
        yield blockers
    finally:
        for task_id in blockers:
            client.post(f"/tasks/{task_id}/cancel")
        for task_id in blockers:
            wait_for(client, task_id, FINAL)
