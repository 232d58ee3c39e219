"""Run a task type to its end inside the test process, on the embedded executor.

    import resize                                   # the module registers the task type
    from tether.testing import run_task, statuses

    def test_resize():
        task = run_task("resize", {"size": 3}, input={"path": "in/a.csv"})
        assert task.status == "succeeded", task.error
        assert task.result == {"rows": 3}

        task = run_task("resize", {"size": 3}, interrupt="pause")
        assert "paused" in statuses(task) and task.status == "succeeded"

The first call sets Django up when nothing has yet: settings ``tether.server.settings``
with ``TETHER_HOME`` and ``TETHER_DATA_DIR`` in a new temporary directory (removed at
exit), so SQLite there and the embedded executor, whatever ``TETHER_HOME``,
``TETHER_DATABASE_URL``, ``TETHER_BROKER_URL`` or ``TETHER_EXECUTOR`` say; then the
database is migrated. Task modules named in ``TETHER_TASK_MODULES`` are imported as
by the server; a test usually imports its module itself.

When Django is already set up (pytest-django, another ``DJANGO_SETTINGS_MODULE``), its
database is used as it is. Under pytest-django mark the test
``@pytest.mark.django_db(transaction=True)``: the executor's threads see committed rows
only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from tether.states import FINAL, Status

if TYPE_CHECKING:
    from tether.models import Task

__all__ = ["TEST_USER", "run_task", "setup", "statuses"]

TEST_USER = "tether-test"
"""The user who owns the tasks run_task submits (created when missing)."""

SETTINGS = "tether.server.settings"
# set while the settings load: a test never reaches a real database, broker or data
_ISOLATED = ("TETHER_DATABASE_URL", "TETHER_BROKER_URL", "TETHER_EXECUTOR", "TETHER_DATA_DIR")
PYTEST_DJANGO_HINT = " (under pytest-django mark the test @pytest.mark.django_db(transaction=True))"
_lock = threading.Lock()
_ready = False


def setup() -> None:
    """Make Django ready for ``run_task`` (see the module's doc); later calls do nothing."""
    global _ready
    with _lock:
        if _ready:
            return
        import django
        from django.apps import apps
        from django.conf import settings

        ours = (
            not settings.configured
            and os.environ.get("DJANGO_SETTINGS_MODULE", SETTINGS) == SETTINGS
        )
        if ours:
            _load_isolated_settings()
        if not apps.ready:
            django.setup()
        if ours:
            from django.core.management import call_command

            call_command("migrate", interactive=False, verbosity=0)
        _ready = True


def _load_isolated_settings() -> None:
    from django.conf import settings

    home = tempfile.mkdtemp(prefix="tether-test-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    saved = {k: os.environ.get(k) for k in ("DJANGO_SETTINGS_MODULE", "TETHER_HOME", *_ISOLATED)}
    os.environ.update(DJANGO_SETTINGS_MODULE=SETTINGS, TETHER_HOME=home)
    for name in _ISOLATED:
        os.environ.pop(name, None)
    umask = os.umask(0o077)
    os.umask(umask)
    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings, which read TETHER_*
    finally:
        os.umask(umask)  # the server's private umask is not for the files a test writes
        for name, value in saved.items():
            if name == "DJANGO_SETTINGS_MODULE":
                continue  # Django reads it again later (e.g. for the test runner)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_task(
    type_name: str,
    params: dict[str, Any] | None = None,
    *,
    input: Any = None,
    interrupt: Literal["pause", "cancel"] | None = None,
    timeout: float = 60.0,
) -> Task:
    """Submit a task of ``type_name`` with ``params`` and run it on an embedded executor
    started for it; return the ``tether.models.Task`` once it is final (succeeded,
    failed or cancelled).

    ``input`` is what the task sees as ``ctx.input`` (as a pipeline step gets the
    previous step's output). ``interrupt``: when the task first reports progress,
    request a pause (resumed as soon as it is paused: the task must continue from its
    checkpoint) or a cancel (its rollback runs). The request is made in the worker's
    own thread, so it always lands at the task's next control point; a task that
    reaches none before it returns just succeeds (``statuses`` shows no pause).

    Raises UnknownTaskType or InvalidParams as a submission would, and TimeoutError
    when the task is not final after ``timeout`` seconds.
    """
    if interrupt not in (None, "pause", "cancel"):
        raise ValueError(f"interrupt must be 'pause', 'cancel' or None, not {interrupt!r}")
    setup()
    from django.db import connection

    from tether.events import bus
    from tether.executors.embedded import EmbeddedExecutor
    from tether.transitions import watch

    if connection.in_atomic_block:
        raise RuntimeError(
            "run_task cannot run inside a transaction: the executor's threads see "
            f"committed rows only{PYTEST_DJANGO_HINT}"
        )
    try:
        connection.ensure_connection()
    except RuntimeError as exc:  # pytest-django's database blocker
        raise RuntimeError(f"run_task: {exc}{PYTEST_DJANGO_HINT}") from None
    task = _submit(type_name, params, input)
    sink = _Interrupter(task.pk, interrupt) if interrupt else None
    executor = EmbeddedExecutor(1, poll_interval=0.05, maintenance_interval=0.1)
    with watch(task.pk, {*FINAL, Status.PAUSED}) as changed:
        if sink is not None:
            bus.add_sink(sink)
        executor.start(recover=False)  # other tasks in a shared test database are not ours
        try:
            _wait(task.pk, changed, timeout, resume=interrupt == "pause")
        finally:
            if sink is not None:
                bus.remove_sink(sink)
            executor.stop(timeout=10)
    task.refresh_from_db()
    return task


def statuses(task: Task) -> list[str]:
    """The statuses ``task`` went through, oldest first (``queued`` … ``succeeded``)."""
    from tether.models import TaskEvent

    return list(
        TaskEvent.objects.filter(task_id=task.pk).order_by("id").values_list("to_status", flat=True)
    )


def _submit(type_name: str, params: dict[str, Any] | None, input: Any) -> Task:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from tether import registry, service, strictjson
    from tether.models import Task

    ttype = registry.get_type(type_name)
    clean = ttype.validate(params)
    strictjson.check(input, "input")
    user_model = get_user_model()
    lookup: dict[str, Any] = {user_model.USERNAME_FIELD: TEST_USER}
    owner, _ = user_model._default_manager.get_or_create(**lookup)
    now = timezone.now()
    task = Task(
        owner=owner,
        type=ttype.name,
        queue=ttype.queue,
        params=clean,
        input=input,
        max_attempts=ttype.max_attempts,
        max_recoveries=ttype.max_recoveries,
        pause_timeout=ttype.pause_timeout,
        created_at=now,
        updated_at=now,
        run_after=now,
    )
    with transaction.atomic():
        service.insert([task], actor=service.actor_of(owner))
    return task


def _wait(task_id: int, changed: threading.Event, timeout: float, *, resume: bool) -> None:
    from tether import service
    from tether.models import Task

    deadline = time.monotonic() + timeout
    while True:
        changed.clear()  # before reading: a change after the read sets it again
        status = Status(Task.objects.values_list("status", flat=True).get(pk=task_id))
        if status in FINAL:
            return
        if status == Status.PAUSED and resume:
            resume = False
            service.resume(task_id, actor=service.actor_of(None), reason="tether.testing")
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"task {task_id} is still {status} after {timeout:g} s")
        # the database is read again at least twice a second (a change made by another
        # process sets no event here)
        changed.wait(min(left, 0.5))


class _Interrupter:
    """An event sink that pauses or cancels one task at its first progress report.
    Sinks run in the thread that committed, here the task's own worker thread: the
    request is stored and pushed to the task before its code goes on, so it takes
    effect at the next control point however fast the task is."""

    def __init__(self, task_id: int, kind: str) -> None:
        self.task_id = task_id
        self.kind = kind
        self._fired = False
        self._lock = threading.Lock()

    def __call__(self, items: Sequence[Any]) -> None:
        from tether import service
        from tether.events.bus import ProgressUpdate
        from tether.exceptions import IllegalTransition

        if not any(isinstance(i, ProgressUpdate) and i.task_id == self.task_id for i in items):
            return
        with self._lock:
            if self._fired:
                return
            self._fired = True
        control = service.pause if self.kind == "pause" else service.cancel
        with contextlib.suppress(IllegalTransition):  # it has ended: statuses() shows it
            control(self.task_id, actor=service.actor_of(None), reason="tether.testing")
