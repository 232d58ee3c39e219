"""``tether new-task``: the real program writes a task module and its test, and the
generated tests pass under plain ``pytest`` run from another directory; bad input gets
one line and a non-zero exit, and nothing is written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.acceptance.conftest import TETHER

PYTEST = TETHER.parent / "pytest"


def clean_env() -> dict[str, str]:
    """The environment of a user's shell: no Tether or Django settings (this test run's
    DJANGO_SETTINGS_MODULE, set by pytest-django, would make pytest-django take over)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "DJANGO_", "PYTEST_"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def new_task(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TETHER), "new-task", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(900)
def test_generated_tests_pass_as_generated(tmp_path: Path) -> None:
    r = new_task(tmp_path, "resize", "--queue", "gpu", "--rollback", "-o", "steps")
    assert r.returncode == 0, r.stderr
    assert "Wrote steps/resize.py and steps/test_resize.py" in r.stdout
    assert f"PYTHONPATH={tmp_path.resolve() / 'steps'} TETHER_TASK_MODULES=resize " in r.stdout
    module = (tmp_path / "steps" / "resize.py").read_text()
    assert '@task(name="resize", queue="gpu", params=PARAMS, rollback=undo_resize)' in module
    # a package directory: the test imports the module relatively
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    r = new_task(tmp_path / "pkg", "blur")
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = subprocess.run(
        [
            str(PYTEST),
            "-q",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "steps" / "test_resize.py"),
            str(tmp_path / "pkg" / "test_blur.py"),
        ],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "5 passed" in run.stdout, run.stdout[-2000:]
    assert list(elsewhere.iterdir()) == []  # its database was a temporary one


def assert_refused(r: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("tether: ") and r.stderr.count("\n") == 1, r.stderr
    assert says in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["9lives"], "not a valid task name"),
        (["resize-it"], "not a valid task name"),
        (["import"], "keyword"),
        (["test_resize"], "test module"),
        (["json"], "installed module"),
        (["countdown"], "a task type of Tether itself"),
        (["resize", "--queue", "gpu/1"], "queue 'gpu/1'"),
    ],
)
def test_bad_names_and_queues(tmp_path: Path, args: list[str], says: str) -> None:
    assert_refused(new_task(tmp_path, *args), 2, says)
    assert list(tmp_path.iterdir()) == []


def test_existing_files_need_force(tmp_path: Path) -> None:
    (tmp_path / "test_resize.py").write_text("mine\n")
    assert_refused(new_task(tmp_path, "resize"), 1, "test_resize.py exists (use --force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_resize.py"]
    assert (tmp_path / "test_resize.py").read_text() == "mine\n"
    r = new_task(tmp_path, "resize", "--force")
    assert r.returncode == 0, r.stderr
    assert "run_task" in (tmp_path / "test_resize.py").read_text()


def test_a_directory_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert_refused(new_task(tmp_path, "resize", "-o", "file"), 1, "file is not a directory")
    assert_refused(new_task(tmp_path, "resize", "-o", "file/sub"), 1, "cannot create file/sub")
    if os.geteuid() == 0:
        return  # root writes into a read-only directory
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert_refused(new_task(tmp_path, "resize", "-o", "locked"), 1, "Permission denied")
