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
from typing import Any

from django.db import close_old_connections, connection

from tether import store
from tether.executors.base import Capabilities, Executor, seconds_setting
from tether.executors.board import ControlBoard, Pace, hand_back_waiting, maintenance_round
from tether.runner import Runner
from tether.states import Status
from tether.transitions import Change, subscribe, unsubscribe

log = logging.getLogger(__name__)


class EmbeddedExecutor(Executor):
    name = "embedded"
    capabilities = Capabilities(
        pause=True, push_control=True, distributed=False, hard_terminate=True, in_process=True
    )

    def __init__(
        self,
        workers: int | None = None,
        *,
        queues: list[str] | None = None,
        poll_interval: float = 0.5,
        maintenance_interval: float = 1.0,
        lease: float = store.LEASE_SECONDS,
        prefetch: int = 32,
        cancel_grace: float | None = None,
    ) -> None:
        """``prefetch``: at most this many tasks claimed ahead per worker slot (they show
        ``running`` while they wait). Claiming short tasks in batches is what makes them
        fast; see ``_wanted``. 0 claims only for idle slots."""
        self._slots = max(1, workers or os.cpu_count() or 1)
        self.queues = queues
        self.worker_id = f"embedded:{os.getpid()}:{id(self):x}"
        self.poll_interval = poll_interval
        self.maintenance_interval = maintenance_interval
        self.lease = lease
        self._jobs: queue.SimpleQueue[store.Job | None] = queue.SimpleQueue()
        self._pace = Pace(prefetch)
        self._inflight = 0  # claimed jobs not finished yet
        self.cancel_grace = (
            cancel_grace if cancel_grace is not None else seconds_setting("CANCEL_GRACE", 10.0)
        )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.board = ControlBoard()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._successes = threading.Event()
        self._runner = Runner(
            self.worker_id,
            register=self.board.remember,
            unregister=self.board.forget,
            on_success=self._successes.set,
        )
        self.board.settle = self._runner.run_in_thread

    @classmethod
    def from_settings(cls, *, workers: int | None = None, **_: Any) -> EmbeddedExecutor:
        return cls(workers)

    @property
    def slots(self) -> int:
        return self._slots

    @property
    def running(self) -> list[int]:
        return self.board.running

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
        self._spawn("tether-committer", self._commit_loop)
        for i in range(self._slots):
            self._spawn(f"tether-worker-{i}", self._work_loop)

    def stop(self, timeout: float = 10.0) -> None:
        if not self._threads or self._stopping.is_set():
            return  # never started, or already stopped
        deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        unsubscribe(self._on_change)
        dispatcher, *others = self._threads  # started first, see start()
        dispatcher.join(timeout)  # no new claims from here on
        self.board.shutdown()
        for _ in range(self._slots):
            self._jobs.put(None)
        for t in others:
            t.join(max(0.0, deadline - time.monotonic()))
        while not self._jobs.empty():  # claimed but never started: give them back
            job = self._jobs.get()
            if job is not None and self.board.take(job):
                self._runner.give_back(job)
        self._successes.set()  # the committer writes what is left, then exits
        self._runner.commit_successes()
        connection.close()
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._threads:
            log.warning(
                "%d thread(s) did not stop in time; their tasks are recovered at the next start",
                len(self._threads),
            )

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
        self.board.on_change(changes)

    def wake(self) -> None:
        """Look for new work now (e.g. after tasks were queued by another process)."""
        self._wake.set()

    # -- loops ---------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            while not self._stopping.is_set():
                want = self._wanted()
                if want <= 0:
                    break
                try:
                    jobs = (
                        store.claim(self.worker_id, want, self.queues, self.lease)
                        if store.has_work(self.queues)
                        else []
                    )
                except Exception:
                    log.exception("claiming work failed; retrying")
                    jobs = []
                self.board.claimed(jobs)
                with self._lock:
                    self._inflight += len(jobs)
                for job in jobs:
                    self._jobs.put(job)
                if len(jobs) < want:
                    break

    def _wanted(self) -> int:
        """How many jobs to claim now (see Pace): short tasks are claimed in batches,
        long ones only for idle slots, so a task never waits long in ``running`` for a
        slot (and a pause of such a task is honoured when it starts)."""
        ahead = self._pace.ahead()
        with self._lock:
            room = self._slots * (1 + ahead) - self._inflight
            idle = self._inflight < self._slots
        # claim in batches: when merely topping up the claim-ahead, wait for half of it
        return room if idle or room * 2 >= self._slots * ahead else 0

    def _work_loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            began = time.monotonic()
            mine = self.board.take(job)  # else settled early or handed back already
            try:
                if mine and self._stopping.is_set():
                    self._runner.give_back(job)
                elif mine:
                    self._runner.run(job)
            except Exception:
                log.exception("job %s crashed the runner", job)
            finally:
                if mine:
                    self._pace.record(time.monotonic() - began)
                with self._lock:
                    self._inflight -= 1
                self._wake.set()

    def _take_over(self, task_id: int) -> None:
        self._runner.take_over(task_id, self.lease)

    def _commit_loop(self) -> None:
        """Write finished tasks' successes in batches while workers run the next ones."""
        while not self._stopping.is_set():
            self._successes.wait(self.poll_interval)
            self._successes.clear()
            try:
                self._runner.commit_successes()
            except Exception:
                log.exception("recording successes failed; retrying")
                time.sleep(self.poll_interval)
                self._successes.set()

    def _maintenance_loop(self) -> None:
        while not self._stopping.wait(self.maintenance_interval):
            try:
                maintenance_round(
                    self.worker_id, self.board, self.lease, self.cancel_grace, self._take_over
                )
                if hand_back_waiting(self.board, self._runner, self._pace):
                    self._wake.set()
                delay = store.next_wakeup(self.queues)
                if delay is not None and delay <= self.maintenance_interval:
                    threading.Timer(delay, self._wake.set).start()
            except Exception:
                log.exception("maintenance failed; retrying")
            finally:
                close_old_connections()
