"""The pure parts of ``tether new-task``: name checks, the rendered files, writing them."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from tether.cli.connection import CliError
from tether.cli.scaffold import import_path, name_problem, render, write


@pytest.mark.parametrize("name", ["resize", "_private", "Step2", "a" * 100, "match", "resize_all"])
def test_good_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("9lives", "not a valid task name"),
        ("a-b", "not a valid task name"),
        ("café", "not a valid task name"),
        ("", "not a valid task name"),
        ("a" * 101, "not a valid task name"),
        ("class", "keyword"),
        ("test_resize", "test module"),
        ("resize_test", "test module"),
        ("json", "installed module"),
        ("tether", "installed module"),
        ("sys", "installed module"),
    ],
)
def test_bad_names(name: str, says: str) -> None:
    problem = name_problem(name)
    assert problem is not None and says in problem


def decorator_keywords(source: str, name: str) -> dict[str, str]:
    tree = ast.parse(source)
    [func] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    [call] = func.decorator_list
    assert isinstance(call, ast.Call)
    return {k.arg or "": ast.unparse(k.value) for k in call.keywords}


def test_render_without_rollback() -> None:
    files = render("resize", "gpu", rollback=False, package=False)
    assert list(files) == ["resize.py", "test_resize.py"]
    module, test = files.values()
    assert decorator_keywords(module, "resize") == {
        "name": "'resize'",
        "queue": "'gpu'",
        "params": "PARAMS",
    }
    assert "undo_" not in module and "ctx.input" in module and "ctx.state" in module
    assert "import resize  # noqa: F401" in test
    assert "interrupt='cancel'" not in test.replace('"', "'")
    assert all(text.endswith("\n") and not text.endswith("\n\n") for text in files.values())


def test_render_with_rollback_in_a_package() -> None:
    module, test = render("blur", "default", rollback=True, package=True).values()
    assert decorator_keywords(module, "blur")["rollback"] == "undo_blur"
    assert "def undo_blur(ctx: TaskContext) -> None:" in module
    assert "from . import blur" in test
    assert 'interrupt="cancel"' in test
    ast.parse(test)


def test_write_creates_the_directory_and_refuses_existing_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    files = {"x.py": "one\n", "test_x.py": "two\n"}
    assert write(target, files, force=False) == [target / "x.py", target / "test_x.py"]
    (target / "x.py").write_text("mine\n")
    (target / "test_x.py").unlink()
    with pytest.raises(CliError, match=r"x\.py exists \(use --force") as err:
        write(target, files, force=False)
    assert err.value.code == 1
    assert (target / "x.py").read_text() == "mine\n"
    assert not (target / "test_x.py").exists()  # nothing written when one file is refused
    write(target, files, force=True)
    assert (target / "x.py").read_text() == "one\n"


def test_write_into_a_file_or_an_unwritable_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CliError, match="is not a directory"):
        write(tmp_path / "f", {"x.py": ""}, force=False)
    with pytest.raises(CliError, match="cannot create"):
        write(tmp_path / "f" / "sub", {"x.py": ""}, force=False)
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only directory")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(CliError, match=r"cannot write .*Permission denied"):
        write(locked, {"x.py": "", "test_x.py": ""}, force=False)
    assert list(locked.iterdir()) == []


def test_import_path_follows_the_packages(tmp_path: Path) -> None:
    steps = tmp_path / "app" / "myproject" / "steps"
    steps.mkdir(parents=True)
    assert import_path(steps, "tiles") == ("tiles", steps)
    (steps / "__init__.py").write_text("")
    (steps.parent / "__init__.py").write_text("")
    assert import_path(steps, "tiles") == ("myproject.steps.tiles", tmp_path / "app")
