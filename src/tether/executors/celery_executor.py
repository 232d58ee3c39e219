"""The Celery executor: Tether tasks run in ``tether worker`` processes (standard Celery
workers, thread pool) on any machine that reaches the database and the broker.

A message only names a task id; the database is the truth. A worker claims the task
with a conditional update (the claim guard), so duplicate or redelivered messages are
ignored. Pause/cancel are stored first, then pushed to every worker by a broadcast
control command; workers also re-read stored requests every second, so a lost
broadcast or an offline worker cannot lose one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from celery import Celery, signals
from celery.worker.control import control_command
from django.conf import settings
from django.core import checks
from django.db import close_old_connections, connection
from django.utils import timezone
from kombu import Connection

from tether import service, store
from tether.events import transport
from tether.exceptions import ServiceUnavailable, StopKind
from tether.executors.base import Capabilities, Executor, seconds_setting
from tether.executors.board import (
    STOP_FOR,
    ControlBoard,
    Pace,
    hand_back_waiting,
    maintenance_round,
)
from tether.models import Task
from tether.redaction import redact
from tether.runner import Runner
from tether.states import Status
from tether.transitions import Change, subscribe, unsubscribe

log = logging.getLogger(__name__)
EXECUTE = "tether.execute"
CONTROL = "tether_control"


def make_app() -> Celery:
    # No Django fix-up: it closes every database connection before and after each
    # message, so each task opened a new one (about 10 ms on a quiet machine); execute()
    # closes only broken or expired connections (CONN_MAX_AGE), and Django is set up
    # by Tether before a worker starts.
    app = Celery("tether", broker=settings.TETHER["BROKER_URL"], set_as_current=False, fixups=[])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="default",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # a long task is never redelivered into a second run: the claim guard ignores it
        broker_transport_options={"visibility_timeout": 24 * 3600},
    )
    app.task(name=EXECUTE, ignore_result=True)(execute)
    return app


_app: Celery | None = None


def get_app() -> Celery:
    global _app
    if _app is None:
        _app = make_app()
    return _app


# -- publishing (API process and workers) --------------------------------------------
class Publisher:
    """Transition listener that turns committed status changes into broker messages."""

    HEALTH_TTL = 1.0  # seconds a broker check is trusted

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._checked: tuple[float, str | None] = (-1e9, None)  # (when, error or None)

    def ensure_broker(self) -> None:
        """Raise ServiceUnavailable when the broker cannot be reached (checked at most
        once a second; a failed publish forces a new check). Submissions call this
        first, so a broker outage refuses them before anything is written. A broker
        lost between this check and the publish costs no task: the row is committed
        and the reaper publishes it again."""
        when, error = self._checked
        now = time.monotonic()
        if now - when > self.HEALTH_TTL:
            error = None
            try:
                with self.app.connection_for_write() as conn:
                    conn.ensure_connection(
                        max_retries=1, interval_start=0, interval_step=0, timeout=2
                    )
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._checked = (now, error)
        if error is not None:
            raise ServiceUnavailable(
                f"the message broker at {redact(str(self.app.conf.broker_url))} is "
                f"unreachable ({error}); nothing was submitted, try again shortly"
            )

    def __call__(self, changes: list[Change]) -> None:
        for c in changes:  # first: a running task stops sooner
            kind = STOP_FOR.get(c.dst)
            if kind and c.src != c.dst:
                self.broadcast(c.task_id, kind)
        runnable = [c.task_id for c in changes if c.dst in (Status.QUEUED, Status.CANCELLING)]
        if runnable:
            rows = Task.objects.filter(id__in=runnable).values_list(
                "id", "queue", "run_after", "worker"
            )
            now = timezone.now()
            todo = [
                (i, q, r) for i, q, r, worker in rows if worker is None
            ]  # queued, or a cancel nobody is rolling back yet
            # stamped before sending, in one statement: a worker claiming the task must
            # not wait for a per-task update's row lock
            Task.objects.filter(id__in=[i for i, _, _ in todo]).update(published_at=now)
            for task_id, queue, run_after in todo:
                self.publish(task_id, queue, max((run_after - now).total_seconds(), 0.0))

    def publish(self, task_id: int, queue: str, delay: float = 0.0) -> None:
        try:
            self.app.send_task(EXECUTE, args=[task_id], queue=queue, countdown=delay or None)
        except Exception as exc:  # stored anyway; the reaper publishes it again
            self._checked = (-1e9, None)
            log.error("could not publish task %s to queue %s: %s", task_id, queue, exc)

    def broadcast(self, task_id: int, kind: StopKind) -> None:
        try:  # the kind travels as its value: plain JSON
            self.app.control.broadcast(CONTROL, arguments={"task_id": task_id, "kind": kind.value})
        except Exception as exc:  # stored anyway; workers poll stored requests
            log.warning("could not broadcast %s of task %s: %s", kind, task_id, exc)


class CeleryExecutor(Executor):
    """The API side: publishes work and control requests; workers run the tasks."""

    name = "celery"
    capabilities = Capabilities(
        pause=True,
        push_control=True,
        distributed=True,
        hard_terminate=True,
        in_process=False,
        needs_broker=True,
        remote_events=True,
    )

    def __init__(self) -> None:
        self.publisher = Publisher(get_app())

    @property
    def slots(self) -> int:
        return 0  # tasks run in `tether worker` processes

    def check(self) -> list[checks.CheckMessage]:
        broker = str(settings.TETHER.get("BROKER_URL") or "")
        if not broker:
            return [
                checks.Error(
                    "TETHER_EXECUTOR=celery needs TETHER_BROKER_URL (redis://… or amqp://…)",
                    hint="set TETHER_BROKER_URL, or unset TETHER_EXECUTOR to run tasks "
                    "inside `tether serve`",
                    id="tether.E002",
                )
            ]
        found: list[checks.CheckMessage] = []
        try:
            Connection(broker).transport  # noqa: B018 - resolves the transport, no I/O
        except Exception as exc:  # KeyError "No such transport", or its library missing
            found.append(
                checks.Error(
                    f"TETHER_BROKER_URL {redact(broker)} cannot be used: {exc}",
                    hint="use redis://host:6379/0 or amqp://user:password@host:5672//",
                    id="tether.E003",
                )
            )
        if connection.vendor == "sqlite":
            found.append(
                checks.Warning(
                    "the Celery executor on SQLite: only workers on this machine reach "
                    "the database, one writer at a time",
                    hint="use PostgreSQL, or MariaDB 10.6+/MySQL 8.0+ (TETHER_DATABASE_URL)",
                    id="tether.W001",
                )
            )
        return found

    def receiving_events(self) -> bool:
        return transport.receiving()

    def run_worker(self, queues: list[str], concurrency: int, loglevel: str) -> None:
        """A standard Celery worker with a thread pool (`celery inspect` works on it)."""
        get_app().worker_main(
            [
                "worker",
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-Q",
                ",".join(queues),
                f"--loglevel={loglevel}",
                "-n",
                f"tether-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
            ]
        )

    def start(self) -> None:
        subscribe(self.publisher)
        service.add_admission_check(self.publisher.ensure_broker)

    def stop(self, timeout: float = 10.0) -> None:
        service.remove_admission_check(self.publisher.ensure_broker)
        unsubscribe(self.publisher)


# -- the worker side --------------------------------------------------------------------
class WorkerRuntime:
    """Per worker process: live contexts, the runner, a committer thread (successes
    are written in groups) and a maintenance thread.

    A delivered message claims its task plus, for short tasks, other due tasks of this
    worker's queues in the same transaction (see Pace); their own messages then find
    them taken and are dropped at once. So a busy worker pays one claim and one commit
    per batch, not per task, while a long task is still claimed only when a thread is
    free for it."""

    def __init__(
        self,
        lease: float | None = None,
        interval: float = 1.0,
        queues: list[str] | None = None,
        prefetch: int = 32,
    ) -> None:
        self.worker_id = f"celery:{socket.gethostname()}:{os.getpid()}"
        self.board = ControlBoard()
        self.lease = lease or seconds_setting("LEASE_SECONDS", store.LEASE_SECONDS)
        self.republish_after = seconds_setting("REPUBLISH_SECONDS", 60.0)
        self.grace = seconds_setting("CANCEL_GRACE", 10.0)
        self.interval = interval
        self.queues = queues
        self.pace = Pace(prefetch)
        self._successes = threading.Event()
        self.runner = Runner(
            self.worker_id,
            register=self.board.remember,
            unregister=self.board.forget,
            on_success=self._successes.set,
        )
        self.board.settle = self.runner.run_in_thread
        self.publisher = Publisher(get_app())
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        transport.start_publisher()  # what this process commits, for `tether serve`
        subscribe(self.publisher)  # retries and reaped tasks are published again
        subscribe(self.board.on_change)
        for name, target in (
            ("tether-maintenance", self._loop),
            ("tether-committer", self._commit_loop),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Running tasks stop at their next control point and are re-queued (and, by
        the still-subscribed publisher, published again) before the worker exits."""
        self.board.shutdown()

    def flush(self) -> None:
        """Write the successes still waiting (at worker exit), and send their events."""
        self.runner.commit_successes()
        transport.stop(timeout=2.0)

    def _loop(self) -> None:
        while not self.board.stopping.wait(self.interval):
            try:
                maintenance_round(
                    self.worker_id, self.board, self.lease, self.grace, self._take_over
                )
                hand_back_waiting(self.board, self.runner, self.pace)
                for task_id, queue in store.stale_queued(self.republish_after):
                    log.info("re-publishing task %s (its message may be lost)", task_id)
                    self.publisher.publish(task_id, queue)
            except Exception:
                log.exception("maintenance failed; retrying")
            finally:
                close_old_connections()

    def _take_over(self, task_id: int) -> None:
        self.runner.take_over(task_id, self.lease)

    def _commit_loop(self) -> None:
        while True:
            self._successes.wait(1.0)
            self._successes.clear()
            try:
                self.runner.commit_successes()
            except Exception:
                log.exception("recording successes failed; retrying")
                close_old_connections()
                time.sleep(0.5)
                self._successes.set()

    def execute(self, task_id: int) -> None:
        if self.board.holds(task_id) or self.board.stopping.is_set():
            return  # claimed here with an earlier batch (or shutting down: redelivered)
        if not store.claimable(task_id):
            log.debug("task %s: not claimable (running, paused or final)", task_id)
            return
        # batches only from this worker's own queues (known once the worker is ready)
        batch = 1 + self.pace.ahead() if self.queues else 1
        jobs = store.claim(self.worker_id, batch, self.queues, self.lease, first=task_id)
        self.board.claimed(jobs)
        for job in jobs:
            if not self.board.take(job):
                continue  # paused/cancelled early, or handed back to idle threads
            if self.board.stopping.is_set():
                self.runner.give_back(job)
                self.board.forget(job.task_id)
                continue
            began = time.monotonic()
            try:
                self.runner.run(job)
            finally:
                self.pace.record(time.monotonic() - began)


_runtime: WorkerRuntime | None = None
_runtime_lock = threading.Lock()


def runtime() -> WorkerRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = WorkerRuntime()
            _runtime.start()
        return _runtime


def execute(task_id: int) -> None:
    """The one Celery task: run (or roll back) Tether task ``task_id``."""
    try:
        runtime().execute(int(task_id))
    finally:
        close_old_connections()


@control_command(args=[("task_id", int), ("kind", str)], signature="<task_id> <kind>")
def tether_control(state: Any, task_id: int, kind: str) -> dict[str, Any]:
    """Broadcast by the API: stop ``task_id`` at its next control point if it runs here
    (``kind``: a requested StopKind's value; others are ignored)."""
    try:
        stop = StopKind(kind)
    except ValueError:
        return {"ok": False, "error": f"unknown stop kind {kind!r}"}
    if stop.requested and _runtime is not None:
        _runtime.board.deliver(int(task_id), stop)
    return {"ok": True}


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    rt = runtime()
    consumer = getattr(sender, "task_consumer", None)
    if consumer is not None:  # claim batches only from the queues this worker serves
        rt.queues = sorted({q.name for q in consumer.queues})


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    if _runtime is not None:
        _runtime.stop()


@signals.worker_shutdown.connect
def _on_exit(**_: Any) -> None:
    if _runtime is not None:
        _runtime.flush()
