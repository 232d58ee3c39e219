"""Events of another process, over a real broker (Redis and RabbitMQ), into a real hub:
the transitions and progress a worker process commits reach this process's hub and its
waiting requests, in order, nothing lost and nothing twice, also across a broker that
goes away and comes back.

The other process is ``tests/integration/event_worker.py``, on this test database."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from django.db import connection

from tests.conftest import require_port
from tests.integration import pipeline_tasks as pt
from tests.integration import tasks  # noqa: F401 (registers it_ledger)
from tests.integration.conftest import wait_until
from tests.integration.tcp_proxy import TcpProxy
from tether import service
from tether.events.hub import Hub
from tether.events.records import PipelineUpdate, ProgressUpdate
from tether.events.transport import Consumer, broker_connection, new_origin
from tether.events.wire import Item
from tether.models import PipelineStep, TaskEvent
from tether.pipelines import control, spec
from tether.states import Status
from tether.transitions import Change, watch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.service]

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 11  # no other test uses this database number


@dataclass(frozen=True)
class Broker:
    kind: str  # redis | rabbitmq
    vhost: str = ""

    @property
    def port(self) -> int:
        return 6379 if self.kind == "redis" else 5672

    def url(self, port: int | None = None) -> str:
        """Its URL, or that of a proxy in front of it on ``port``."""
        if self.kind == "redis":
            return f"redis://127.0.0.1:{port or self.port}/{REDIS_DB}"
        return f"amqp://guest:guest@127.0.0.1:{port or self.port}/{self.vhost}"


def _rabbitmqctl(*args: str) -> bool:
    try:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A real broker; on RabbitMQ a vhost of its own where ``rabbitmqctl`` works."""
    kind: str = request.param
    b = Broker(kind)
    require_port({"redis": "Redis", "rabbitmq": "RabbitMQ"}[kind], b.port)
    vhost = f"tether_events_test_{os.getpid()}"
    if kind == "rabbitmq" and _rabbitmqctl("add_vhost", vhost):
        try:
            if _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
                b = Broker(kind, vhost)
            yield b
        finally:
            _rabbitmqctl("delete_vhost", vhost)
    else:
        yield b


def database_url() -> str:
    """This test database, for the other process."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    scheme = {"postgresql": "postgres", "mysql": "mysql"}[connection.vendor]
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"{scheme}://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or ''}/{s['NAME']}"


class WorkerProcess:
    """``event_worker.py`` in a subprocess, publishing to ``broker_url``."""

    def __init__(self, broker_url: str, home: Path) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tether.server.settings",
            "TETHER_HOME": str(home),
            "TETHER_DATABASE_URL": database_url(),
            "TETHER_BROKER_URL": broker_url,
        }
        home.mkdir(parents=True, exist_ok=True)
        self.log = home / "worker.log"
        self._log: IO[bytes] = open(self.log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.event_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def command(self, line: str) -> None:
        """Send a command; return once the process has handed its changes to the broker."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", f"{line!r}: {answer!r}\n{self.log.read_text()}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
        assert self.proc.returncode == 0, self.log.read_text()


class Server:
    """What ``tether serve`` runs with Celery workers: a hub fed by a consumer. Records
    the items the consumer delivered and the events the hub released."""

    def __init__(self, broker_url: str) -> None:
        self.hub = Hub()
        self.hub.start()
        self.heard: list[Item] = []
        self.events: list[dict[str, Any]] = []
        self.hub.listeners.append(self.events.extend)
        self.consumer = Consumer(
            lambda: broker_connection(broker_url, heartbeat=10), self._ingest, origin=new_origin()
        )
        self.consumer.start()
        wait_until(self.consumer.connected.is_set, "the consumer connected")

    def _ingest(self, items: list[Item]) -> None:
        self.heard.extend(items)
        self.hub.ingest(items)

    def heard_ids(self) -> list[int]:
        return [i.event_id for i in self.heard if isinstance(i, Change) and i.event_id]

    def statuses(self, task_id: int) -> list[dict[str, Any]]:
        return [e for e in self.events if e["kind"] == "status" and e["task"] == task_id]

    def close(self) -> None:
        self.consumer.stop(5)
        self.hub.stop()


@pytest.fixture
def server(broker: Broker) -> Iterator[Server]:
    s = Server(broker.url())
    yield s
    s.close()


@pytest.fixture
def worker_process(broker: Broker, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess(broker.url(), tmp_path / "worker")
    yield w
    w.close()


def stored(task_id: int) -> list[tuple[int, str]]:
    return list(
        TaskEvent.objects.filter(task_id=task_id).order_by("id").values_list("id", "to_status")
    )


def test_a_worker_process_transitions_and_progress_reach_the_hub_in_order(
    server: Server, worker_process: WorkerProcess, make_user: Any
) -> None:
    alice = make_user("alice")
    worker_process.command("run")
    task = service.submit(alice, "it_ledger", {"steps": 300, "step_ms": 5})
    wait_until(
        lambda: any(isinstance(i, ProgressUpdate) and i.task_id == task.id for i in server.heard),
        "progress of the running task",
    )
    # a request waiting in this process hears the other process's commit
    with watch(task.id, {Status.PAUSED}) as paused:
        service.pause(task.id, actor="user:alice")
        assert paused.wait(10), "paused, committed by the worker process, never heard"
    service.resume(task.id, actor="user:alice")
    wait_until(lambda: any(e["to"] == "succeeded" for e in server.statuses(task.id)), "success")

    events = server.statuses(task.id)
    assert [(e["id"], e["to"]) for e in events] == stored(task.id)
    assert [e["to"] for e in events] == [
        "queued", "running", "pausing", "paused", "queued", "running", "succeeded"
    ]  # fmt: skip
    assert all(e["owner"] == "alice" and e["task_type"] == "it_ledger" for e in events)
    # what the worker process committed came over the broker, not from the database
    by_worker = {e["id"] for e in events if e["to"] in ("running", "paused", "succeeded")}
    assert by_worker <= set(server.heard_ids())
    progress = [e for e in server.events if e["kind"] == "progress" and e["task"] == task.id]
    assert progress and progress[0]["owner"] == "alice", progress[:1]
    done = [e["progress"]["done"] for e in progress]
    assert done == sorted(done), done


def test_a_pipeline_moved_by_a_worker_process_is_heard_over_the_broker(
    server: Server, worker_process: WorkerProcess, make_user: Any
) -> None:
    alice = make_user("alice")
    pt.clear_ledger()
    worker_process.command("run")
    steps = [
        {"name": "it_step", "order_no": n, "context": {"label": label, "ticks": 3}}
        for n, label in ((1, "a"), (2, "b"))
    ]
    body = {"pipeline_name": "p", "project": "x", "data_url": "", "transformers_list": steps}
    pid = control.create(alice, spec.parse(body)).pk

    def moves() -> list[dict[str, Any]]:
        return [e for e in server.events if e["kind"] == "pipeline" and e["pipeline"] == pid]

    wait_until(lambda: [e["to"] for e in moves()][-1:] == ["succeeded"], "success", timeout=30)
    assert [e["to"] for e in moves()] == ["queued", "running", "succeeded"]
    assert {e["owner"] for e in moves()} == {"alice"}
    over_broker = [i for i in server.heard if isinstance(i, PipelineUpdate)]
    assert [(i.src, i.dst) for i in over_broker] == [
        ("queued", "running"),
        ("running", "succeeded"),
    ]
    ids = set(PipelineStep.objects.filter(pipeline_id=pid).values_list("task_id", flat=True))
    statuses = [e for e in server.events if e["kind"] == "status" and e["task"] in ids]
    assert len(statuses) == 6 and {e["pipeline"] for e in statuses} == {pid}
    assert all(i.pipeline_id == pid for i in server.heard if isinstance(i, Change))


def burst_task(user: Any) -> int:
    """A task no executor runs (its queue is served by none): pause and resume it."""
    return service.submit(user, "it_ledger", {}, queue="nobody").id


def test_a_burst_arrives_whole_in_id_order(
    server: Server, worker_process: WorkerProcess, make_user: Any
) -> None:
    tid = burst_task(make_user("bob"))
    worker_process.command(f"burst {tid} 500")
    wait_until(lambda: len(server.statuses(tid)) == 501, "501 events")
    assert [(e["id"], e["to"]) for e in server.statuses(tid)] == stored(tid)
    assert len(set(server.heard_ids())) == 500  # every one over the broker


def test_events_lost_while_the_broker_is_away_are_recovered_once(
    broker: Broker, tmp_path: Path, make_user: Any
) -> None:
    """The server's connection is cut in the middle of a burst: it reconnects, and what
    it missed comes from the database: every event once, in order."""
    proxy = TcpProxy(broker.port)
    server = Server(broker.url(proxy.port))
    worker = WorkerProcess(broker.url(), tmp_path / "worker")
    try:
        tid = burst_task(make_user("carol"))
        worker.command(f"burst {tid} 200")
        wait_until(lambda: len(server.heard_ids()) == 200, "the first 200 over the broker")
        proxy.cut()
        wait_until(lambda: not server.consumer.connected.is_set(), "the consumer disconnected")
        worker.command(f"burst {tid} 200")  # published while this server is away
        proxy.restore()
        wait_until(server.consumer.connected.is_set, "the consumer reconnected", timeout=20)
        worker.command(f"burst {tid} 100")
        wait_until(lambda: len(server.statuses(tid)) == 501, "501 events", timeout=20)
        assert [(e["id"], e["to"]) for e in server.statuses(tid)] == stored(tid)
        assert len(set(server.heard_ids())) >= 300  # the last 100 over the broker again
    finally:
        worker.close()
        server.close()
        proxy.close()


def test_a_publisher_keeps_what_it_could_not_send_until_the_broker_is_back(
    broker: Broker, server: Server, tmp_path: Path, make_user: Any
) -> None:
    proxy = TcpProxy(broker.port)
    worker = WorkerProcess(broker.url(proxy.port), tmp_path / "worker")
    try:
        tid = burst_task(make_user("dave"))
        worker.command(f"burst {tid} 10")
        proxy.cut()
        # the process commits while the broker is away; its publisher keeps them
        worker.proc.stdin.write(f"burst {tid} 100\n")  # type: ignore[union-attr]
        worker.proc.stdin.flush()  # type: ignore[union-attr]
        wait_until(lambda: len(stored(tid)) == 111, "110 transitions committed")
        proxy.restore()
        assert worker.proc.stdout.readline().strip() == "ok"  # type: ignore[union-attr]
        wait_until(lambda: len(set(server.heard_ids())) == 110, "all 110 over the broker")
        assert [(e["id"], e["to"]) for e in server.statuses(tid)] == stored(tid)
    finally:
        worker.close()
        proxy.close()


def test_a_broker_that_stops_answering_holds_up_neither_commits_nor_events(
    broker: Broker, server: Server, tmp_path: Path, make_user: Any
) -> None:
    """The network to the broker goes silent (nothing answers, nothing is closed): the
    process commits on, its publisher gives up on the send after a timeout, and what it
    kept arrives once the broker answers again."""
    proxy = TcpProxy(broker.port)
    worker = WorkerProcess(broker.url(proxy.port), tmp_path / "worker")
    try:
        tid = burst_task(make_user("erin"))
        worker.command(f"burst {tid} 10")
        proxy.freeze()
        worker.proc.stdin.write(f"burst {tid} 100\n")  # type: ignore[union-attr]
        worker.proc.stdin.flush()  # type: ignore[union-attr]
        wait_until(lambda: len(stored(tid)) == 111, "110 transitions committed")
        wait_until(
            lambda: "cannot publish events" in worker.log.read_text(),
            "the publisher giving up on the silent broker",
            timeout=30,
        )
        proxy.restore()
        assert worker.proc.stdout.readline().strip() == "ok"  # type: ignore[union-attr]
        wait_until(lambda: len(set(server.heard_ids())) == 110, "all 110 over the broker")
        assert [(e["id"], e["to"]) for e in server.statuses(tid)] == stored(tid)
    finally:
        worker.close()
        proxy.close()
