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
from typing import Any

from celery import Celery, signals
from celery.worker.control import control_command
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from tether import store
from tether.executors.base import Capabilities, Executor
from tether.executors.board import STOP_FOR, ControlBoard, maintenance_round
from tether.models import Task
from tether.runner import Runner
from tether.states import Status
from tether.transitions import Change, subscribe, unsubscribe

log = logging.getLogger(__name__)
EXECUTE = "tether.execute"
CONTROL = "tether_control"


def make_app() -> Celery:
    app = Celery("tether", broker=settings.TETHER["BROKER_URL"], set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], result_serializer="json",
        task_ignore_result=True, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, task_default_queue="default",
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
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

    def __init__(self, app: Celery) -> None:
        self.app = app

    def __call__(self, changes: list[Change]) -> None:
        runnable = [c.task_id for c in changes if c.dst in (Status.QUEUED, Status.CANCELLING)]
        if runnable:
            rows = Task.objects.filter(id__in=runnable).values_list(
                "id", "queue", "run_after", "worker")
            now = timezone.now()
            todo = [(i, q, r) for i, q, r, worker in rows
                    if worker is None]  # queued, or a cancel nobody is rolling back yet
            # stamped before sending, in one statement: a worker claiming the task must
            # not wait for a per-task update's row lock
            Task.objects.filter(id__in=[i for i, _, _ in todo]).update(published_at=now)
            for task_id, queue, run_after in todo:
                self.publish(task_id, queue, max((run_after - now).total_seconds(), 0.0))
        for c in changes:
            kind = STOP_FOR.get(c.dst)
            if kind:
                self.broadcast(c.task_id, kind)

    def publish(self, task_id: int, queue: str, delay: float = 0.0) -> None:
        try:
            self.app.send_task(EXECUTE, args=[task_id], queue=queue,
                               countdown=delay or None)
        except Exception as exc:  # stored anyway; the reaper publishes it again
            log.error("could not publish task %s to queue %s: %s", task_id, queue, exc)

    def broadcast(self, task_id: int, kind: str) -> None:
        try:
            self.app.control.broadcast(CONTROL, arguments={"task_id": task_id, "kind": kind})
        except Exception as exc:  # stored anyway; workers poll stored requests
            log.warning("could not broadcast %s of task %s: %s", kind, task_id, exc)


class CeleryExecutor(Executor):
    """The API side: publishes work and control requests; workers run the tasks."""

    name = "celery"
    capabilities = Capabilities(pause=True, push_control=True, distributed=True,
                                hard_terminate=False, in_process=False)

    def __init__(self) -> None:
        self.publisher = Publisher(get_app())

    @property
    def slots(self) -> int:
        return 0  # tasks run in `tether worker` processes

    def start(self) -> None:
        subscribe(self.publisher)

    def stop(self, timeout: float = 10.0) -> None:
        unsubscribe(self.publisher)


# -- the worker side --------------------------------------------------------------------
class WorkerRuntime:
    """Per worker process: live contexts, a maintenance thread, the runner."""

    def __init__(self, lease: float | None = None, interval: float = 1.0) -> None:
        self.worker_id = f"celery:{socket.gethostname()}:{os.getpid()}"
        self.board = ControlBoard()
        self.lease = float(lease or settings.TETHER["LEASE_SECONDS"])  # type: ignore[arg-type]
        self.republish_after = float(settings.TETHER["REPUBLISH_SECONDS"])  # type: ignore[arg-type]
        self.interval = interval
        self.runner = Runner(self.worker_id, register=self.board.remember,
                             unregister=self.board.forget)
        self.publisher = Publisher(get_app())
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        subscribe(self.publisher)  # retries and reaped tasks are published again
        subscribe(self.board.on_change)
        self._thread = threading.Thread(target=self._loop, name="tether-maintenance",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Running tasks stop at their next control point and are re-queued (and, by
        the still-subscribed publisher, published again) before the worker exits."""
        self.board.shutdown()

    def _loop(self) -> None:
        while not self.board.stopping.wait(self.interval):
            try:
                maintenance_round(self.worker_id, self.board, self.lease)
                for task_id, queue in store.stale_queued(self.republish_after):
                    log.info("re-publishing task %s (its message may be lost)", task_id)
                    self.publisher.publish(task_id, queue)
            except Exception:
                log.exception("maintenance failed; retrying")
            finally:
                close_old_connections()

    def execute(self, task_id: int) -> None:
        job = store.claim_task(self.worker_id, task_id, self.lease)
        if job is None:
            log.info("task %s: not claimable (already running, paused or final)", task_id)
            return
        self.board.claimed([task_id])
        self.runner.run(job)


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
    """Broadcast by the API: stop ``task_id`` at its next control point if it runs here."""
    if kind in ("pause", "cancel") and _runtime is not None:
        _runtime.board.deliver(int(task_id), kind)
    return {"ok": True}


@signals.worker_ready.connect
def _on_worker_ready(**_: Any) -> None:
    runtime()


@signals.worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    if _runtime is not None:
        _runtime.stop()
