"""``tether new-task NAME``: write a task module and its test, both passing as written.

The texts are in ``templates/`` (package data); ``render`` and ``write`` are pure and
unit-tested, the command adds the checks that need Tether's registry.
"""

from __future__ import annotations

import atexit
import importlib.util
import keyword
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from string import Template
from typing import Annotated

import typer

from tether.cli.connection import EXIT_REFUSED, EXIT_USAGE, CliError

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
DEFAULT_QUEUE = "default"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a new task type and module, or None. Checks the name
    alone and what ``import NAME`` would find; Tether's own type names are checked by
    the command."""
    if keyword.iskeyword(name):
        return f"{name!r} is a Python keyword; choose another name"
    if not NAME_RE.fullmatch(name):
        return (
            f"{name!r} is not a valid task name: use a Python identifier (ASCII letters, "
            "digits and '_', not starting with a digit, at most 100 characters)"
        )
    if name.startswith("test_") or name.endswith("_test"):
        return f"{name!r} looks like a test module to pytest; choose a name without test_/_test"
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = f" ({spec.origin})" if spec.origin and spec.origin != "built-in" else ""
        return f"{name!r} is the name of an installed module{where}; choose another name"
    return None


def _template(file: str) -> Template:
    return Template(resources.files("tether.cli").joinpath("templates", file).read_text("utf-8"))


def render(name: str, queue: str, *, rollback: bool, package: bool) -> dict[str, str]:
    """The files to write, by file name: ``NAME.py`` and ``test_NAME.py``. ``package``:
    the directory is a Python package, so the test imports the module relatively."""
    test_file = f"test_{name}.py"
    fields = {
        "name": name,
        "queue": queue,
        "test_file": test_file,
        "undo": _template("undo.py.tmpl").substitute(name=name) if rollback else "",
        "rollback_option": f", rollback=undo_{name}" if rollback else "",
        "import_line": f"from . import {name}" if package else f"import {name}",
        "cancel_test": _template("test_cancel.py.tmpl").substitute(name=name) if rollback else "",
    }
    texts = {
        f"{name}.py": _template("task.py.tmpl").substitute(fields),
        test_file: _template("test_task.py.tmpl").substitute(fields),
    }
    return {file: text.rstrip("\n") + "\n" for file, text in texts.items()}


def write(directory: Path, files: dict[str, str], *, force: bool) -> list[Path]:
    """Write ``files`` into ``directory`` (created when missing): all of them or none.
    Raises CliError for an existing file (unless ``force``) or one that cannot be
    written."""
    if directory.exists() and not directory.is_dir():
        raise CliError(f"{directory} is not a directory", EXIT_REFUSED)
    paths = [directory / file for file in files]
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise CliError(f"{existing[0]} exists (use --force to overwrite it)", EXIT_REFUSED)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {directory}: {exc.strerror or exc}", EXIT_REFUSED) from None
    written: list[Path] = []
    try:
        for path, text in zip(paths, files.values(), strict=True):
            with open(path, "w" if force else "x", encoding="utf-8") as f:
                written.append(path)
                f.write(text)
    except OSError as exc:
        for path in written:  # leave nothing half-made behind
            path.unlink(missing_ok=True)
        where = exc.filename or directory
        raise CliError(f"cannot write {where}: {exc.strerror or exc}", EXIT_REFUSED) from None
    return paths


def import_path(directory: Path, name: str) -> tuple[str, Path]:
    """The dotted path of module ``name`` in ``directory`` and the directory that must
    be on PYTHONPATH for it: the packages (``__init__.py``) around it count."""
    parts = [name]
    root = directory.resolve()
    while (root / "__init__.py").is_file() and root.parent != root:
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def tether_type_names() -> set[str]:
    """The names of the task types Tether itself registers (``fetch``, ``csv_import``,
    …), read from a throwaway set-up: nothing of the user's is touched or imported."""
    from django.conf import settings

    if not settings.configured:
        home = tempfile.mkdtemp(prefix="tether-new-task-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
        for var in (
            "TETHER_DATABASE_URL",
            "TETHER_BROKER_URL",
            "TETHER_EXECUTOR",
            "TETHER_DATA_DIR",
            "TETHER_TASK_MODULES",
            "TETHER_APPS",
        ):
            os.environ.pop(var, None)
        os.environ.update(TETHER_HOME=home, DJANGO_SETTINGS_MODULE="tether.server.settings")
    umask = os.umask(0o022)
    os.umask(umask)
    from tether.cli.server import setup_django

    try:
        setup_django()
    finally:
        os.umask(umask)  # the settings make files private; the user's sources are not
    from tether import registry

    return {t.name for t in registry.all_types()}


def new_task(
    name: Annotated[str, typer.Argument(help="Task type name, also the module's name.")],
    queue: Annotated[
        str,
        typer.Option("--queue", help="Queue of the task type: its workers run `-Q QUEUE`."),
    ] = DEFAULT_QUEUE,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Add a rollback hook (run on cancel).")
    ] = False,
    output: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="DIR", help="Directory to write the files to."),
    ] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Write a task module NAME.py (params schema, checkpoints, ctx.input, a rollback
    stub with --rollback) and its test test_NAME.py into DIR."""
    problem = name_problem(name)
    if problem:
        raise CliError(problem, EXIT_USAGE)
    if name in tether_type_names():
        raise CliError(f"{name!r} is a task type of Tether itself; choose another name", EXIT_USAGE)
    from tether.service import QUEUE_RE

    if not QUEUE_RE.fullmatch(queue):
        raise CliError(
            f"queue {queue!r}: use 1-100 letters, digits, '_', '-', '.' or ':'", EXIT_USAGE
        )
    package = (output / "__init__.py").is_file()
    paths = write(output, render(name, queue, rollback=rollback, package=package), force=force)
    module, test = paths
    dotted, root = import_path(output, name)
    typer.echo(f"Wrote {module} and {test}")
    typer.echo(f"  edit {module.name}, then run its test:  pytest {test}")
    typer.echo(
        f"  deploy: PYTHONPATH={root} TETHER_TASK_MODULES={dotted} for `tether serve` "
        f"and `tether worker -Q {queue}` (README: Write and deploy a step)"
    )


def register(app: typer.Typer) -> None:
    app.command("new-task", rich_help_panel="Develop")(new_task)
