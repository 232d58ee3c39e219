"""The embedded executor: worker threads inside the ``tether serve`` process.

One dispatcher thread claims queued work in batches for free slots; worker threads
run jobs; a maintenance thread renews leases, re-checks control requests stored in
the database, expires paused tasks and recovers lost leases. Pause and cancel reach a
running task at once through the in-process transition listener.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

from django.db import close_old_connections, connection

from tether import store
from tether.context import TaskContext
from tether.executors.base import Capabilities, Executor
from tether.runner import Runner
from tether.states import Status
from tether.transitions import Change, subscribe, unsubscribe

log = logging.getLogger(__name__)
STOP_FOR = {Status.PAUSING: "pause", Status.CANCELLING: "cancel"}


class EmbeddedExecutor(Executor):
    name = "embedded"
    capabilities = Capabilities(pause=True, push_control=True, distributed=False,
                                hard_terminate=False, in_process=True)

    def __init__(self, workers: int | None = None, *, queues: list[str] | None = None,
                 poll_interval: float = 0.5, maintenance_interval: float = 1.0,
                 lease: float = store.LEASE_SECONDS) -> None:
        self._slots = max(1, workers or os.cpu_count() or 1)
        self.queues = queues
        self.worker_id = f"embedded:{os.getpid()}:{id(self):x}"
        self.poll_interval = poll_interval
        self.maintenance_interval = maintenance_interval
        self.lease = lease
        self._jobs: queue.SimpleQueue[store.Job | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(self._slots)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._contexts: dict[int, TaskContext] = {}
        self._threads: list[threading.Thread] = []
        self._runner = Runner(self.worker_id, register=self._contexts.__setitem__,
                              unregister=self._forget)

    def _forget(self, task_id: int) -> None:
        self._contexts.pop(task_id, None)

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def running(self) -> list[int]:
        return list(self._contexts)

    # -- lifecycle -----------------------------------------------------------------
    def start(self, *, recover: bool = True) -> None:
        """Start the threads. ``recover`` treats every task still held by any worker as
        orphaned: only safe when this process owns the database (``tether serve``)."""
        if recover:
            n = store.release_lost(expired_only=False, actor=self.worker_id)
            if n:
                log.info("recovered %d task(s) left by a previous run", n)
            close_old_connections()
        subscribe(self._on_change)
        self._spawn("tether-dispatcher", self._dispatch_loop)
        self._spawn("tether-maintenance", self._maintenance_loop)
        for i in range(self._slots):
            self._spawn(f"tether-worker-{i}", self._work_loop)

    def stop(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        unsubscribe(self._on_change)
        dispatcher, *others = self._threads
        dispatcher.join(timeout)  # no new claims from here on
        for ctx in list(self._contexts.values()):
            ctx.request_stop("shutdown")
        for _ in range(self._slots):
            self._jobs.put(None)
        for t in others:
            t.join(max(0.0, deadline - time.monotonic()))
        while not self._jobs.empty():  # claimed but never started: give them back
            job = self._jobs.get()
            if job is not None:
                self._runner.give_back(job)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning("%d thread(s) did not stop in time; their tasks are recovered "
                        "at the next start", len(self._threads))

    def _spawn(self, name: str, target: object) -> None:
        t = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, loop: object) -> None:
        try:
            loop()  # type: ignore[operator]
        finally:
            connection.close()

    # -- push notifications ------------------------------------------------------------
    def _on_change(self, changes: list[Change]) -> None:
        for change in changes:
            if change.dst == Status.QUEUED or change.dst == Status.CANCELLING:
                self._wake.set()
            kind = STOP_FOR.get(change.dst)
            if kind:
                ctx = self._contexts.get(change.task_id)
                if ctx is not None:
                    ctx.request_stop(kind)

    def wake(self) -> None:
        """Look for new work now (e.g. after tasks were queued by another process)."""
        self._wake.set()

    # -- loops ---------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            while not self._stopping.is_set():
                free = self._acquire_free()
                if self._stopping.is_set():
                    for _ in range(free):
                        self._idle.release()
                    return
                if not free:
                    break
                try:
                    jobs = store.claim(self.worker_id, free, self.queues, self.lease)
                except Exception:
                    log.exception("claiming work failed; retrying")
                    jobs = []
                for _ in range(free - len(jobs)):
                    self._idle.release()
                for job in jobs:
                    self._jobs.put(job)
                if len(jobs) < free:
                    break

    def _acquire_free(self) -> int:
        """Wait for at least one idle slot, then take every idle slot there is."""
        while not self._idle.acquire(timeout=self.poll_interval):
            if self._stopping.is_set():
                return 0
        n = 1
        while self._idle.acquire(blocking=False):
            n += 1
        return n

    def _work_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if self._stopping.is_set():
                    self._runner.give_back(job)
                else:
                    self._runner.run(job)
            except Exception:
                log.exception("job %s crashed the runner", job)
            finally:
                self._idle.release()
                self._wake.set()

    def _maintenance_loop(self) -> None:
        while not self._stopping.wait(self.maintenance_interval):
            try:
                store.heartbeat(self.worker_id, self.lease)
                for task_id, status in store.pending_controls(self.worker_id).items():
                    ctx = self._contexts.get(task_id)
                    if ctx is not None and ctx.stop_requested is None:
                        ctx.request_stop(STOP_FOR[Status(status)])
                store.expire_paused(actor=self.worker_id)
                store.release_lost(actor=self.worker_id)
                delay = store.next_wakeup(self.queues)
                if delay is not None and delay <= self.maintenance_interval:
                    threading.Timer(delay, self._wake.set).start()
            except Exception:
                log.exception("maintenance failed; retrying")
            finally:
                close_old_connections()
