"""Where pipeline steps keep their files: per-user areas under TETHER_DATA_DIR.

A step hands big data on by path: its JSON output names a file relative to
TETHER_DATA_DIR (``{"path": "fetch/3/41.csv", ...}``) and the next step opens it. A
path read from a step's input is never trusted as it is: ``owned_file`` resolves it
(symbolic links included) and accepts it only inside the step owner's own areas, so a
crafted input cannot make a step read another user's file or ``/etc/passwd``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from tether.context import TaskContext
from tether.datasets.errors import DataError
from tether.datasets.files import data_dir
from tether.models import PipelineStep, Task

OWNER_AREAS = ("fetch", "steps", "sentinel", "s3")  # kinds with a directory per user
EXPORTS = "exports"  # one shared directory; a file belongs to the owner of its task


def data_root() -> Path:
    """TETHER_DATA_DIR as a resolved path (TETHER_HOME when unset)."""
    return data_dir("fetch").parent.resolve()


def owner_of(ctx: TaskContext) -> int:
    if ctx.owner_id is not None:
        return int(ctx.owner_id)
    return int(Task.objects.filter(id=ctx.task_id).values_list("owner_id", flat=True)[0])


def owner_dir(kind: str, owner_id: int) -> Path:
    """``TETHER_DATA_DIR/<kind>/<owner id>``, created private (0700)."""
    from tether.server.config import private_dir

    return private_dir(data_dir(kind) / str(int(owner_id)))


def step_dir(ctx: TaskContext) -> Path:
    """A private directory for the files of one step run (your own step types):
    ``TETHER_DATA_DIR/steps/<owner>/<task id>``, the same for its rollback."""
    from tether.server.config import private_dir

    return private_dir(owner_dir("steps", owner_of(ctx)) / str(origin_task_id(ctx)))


def relative(path: Path) -> str:
    """``path`` as a step output names it: relative to TETHER_DATA_DIR."""
    return path.resolve().relative_to(data_root()).as_posix()


def origin_task_id(ctx: TaskContext) -> int:
    """The id of the task whose work ``ctx`` is about: the step's own task, also when
    ``ctx`` belongs to the extra task that undoes a finished step of a cancelled
    pipeline (files named by task id are found by the undo too)."""
    found = (
        PipelineStep.objects.filter(undo_task_id=ctx.task_id)
        .values_list("task_id", flat=True)
        .first()
    )
    return int(found) if found is not None else ctx.task_id


def remove(path: Path) -> None:
    """Delete a file or a directory tree; nothing there is fine (idempotent)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def input_path(value: Any, *, step: str) -> str:
    """The file named by a step's input: a previous step's output with a ``path``, or
    a path string."""
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return str(value["path"])
    if isinstance(value, str) and value:
        if "://" in value:
            raise DataError(f"{step}: its input is a URL ({value[:200]}); fetch it first")
        return value
    if isinstance(value, list):
        raise DataError(
            f"{step}: its input is a list (the outputs of a parallel group); it takes one file"
        )
    raise DataError(
        f"{step}: its input names no file (want a previous step's output with a "
        "'path', or a path relative to TETHER_DATA_DIR)"
    )


def owned_file(ctx: TaskContext, name: str, *, step: str) -> Path:
    """The real path of file ``name`` (relative to TETHER_DATA_DIR) if it is in the
    owner's own areas: ``fetch/<owner>/``, ``steps/<owner>/``, ``sentinel/<owner>/``,
    ``s3/<owner>/`` or an export of one of the owner's tasks. Raises DataError
    otherwise."""
    root = data_root()
    owner = owner_of(ctx)
    if "\x00" in name:
        raise DataError(f"{step}: {name!r} is not a file of yours")
    path = (root / name).resolve()  # absolute names, '..' and symbolic links resolved
    allowed = False
    for kind in OWNER_AREAS:
        area = (root / kind / str(owner)).resolve()
        if path.is_relative_to(area) and path != area:
            allowed = True
    exports = (root / EXPORTS).resolve()
    if path.parent == exports and path.name.startswith("export-"):
        task_id = path.name.removeprefix("export-").removesuffix(".csv")
        allowed = (
            path.suffix == ".csv"
            and task_id.isdigit()
            and Task.objects.filter(id=int(task_id), owner_id=owner).exists()
        )
    if not allowed:
        raise DataError(
            f"{step}: {name!r} is not a file of yours (a step reads only files under "
            "TETHER_DATA_DIR that your own steps or exports wrote)"
        )
    if not path.is_file():
        raise DataError(f"{step}: file {name!r} does not exist (any more)")
    return path


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (a hard link, or a copy across
    file systems); a private file either way."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
        os.chmod(target, 0o600)
