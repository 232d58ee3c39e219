"""Files a real server writes are private to its user: 0600 files in 0700 directories
(the SQLite database and its WAL, the secret key, uploads, exports, renders), whatever
the umask it was started with; a TETHER_HOME or TETHER_DATA_DIR that exists already
keeps its mode (a sticky or shared directory is not Tether's to change), one Tether
creates is 0700; and it does not answer to Host: testserver."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.acceptance.conftest import (
    TETHER,
    ServerFactory,
    assert_error,
    login,
    run_tether,
    server_env,
    submit,
    wait_for,
    wait_progress,
)

SLOW_IMPORTS = {
    "TETHER_APPS": "tests.acceptance.dataset_knobs.DatasetKnobs",
    "ACC_IMPORT_BATCH_ROWS": "1",
    "ACC_IMPORT_BATCH_DELAY_MS": "50",
}
CSV = "id,name,day\n1,Ann,2024-01-02\n2,Bo,2024-02-03\n"


def tree(root: Path) -> Iterator[Path]:
    yield root
    for path in root.rglob("*"):
        if not path.is_symlink():
            yield path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def loose(root: Path) -> list[str]:
    """Files and directories in ``root`` that group or others may use (``root`` itself,
    a directory the user chose, keeps its mode)."""
    found = []
    for path in list(tree(root))[1:]:
        try:
            info = path.stat()
        except FileNotFoundError:
            continue  # removed meanwhile (a temporary file)
        mode = stat.S_IMODE(info.st_mode)
        want = 0o700 if stat.S_ISDIR(info.st_mode) else 0o600
        if mode & 0o077 or mode & want != want:
            found.append(f"{path.relative_to(root.parent)} {mode:o}")
    return found


def test_server_files_are_private(server: ServerFactory) -> None:
    old = os.umask(0o022)  # a usual umask: the server must not rely on the caller's
    try:
        srv = server(workers=2, **SLOW_IMPORTS)
    finally:
        os.umask(old)
    home_mode = mode_of(srv.home)
    with login(srv) as c:
        r = c.post(
            "/datasets/import",
            data={"dataset": "people"},
            files={"file": ("people.csv", CSV.encode(), "text/csv")},
        )
        assert r.status_code == 201, r.text
        assert wait_for(c, r.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
        r = c.post("/datasets/people/export", json={})
        assert r.status_code == 201, r.text
        export = wait_for(c, r.json()["id"], ("succeeded", "failed"))
        assert export["status"] == "succeeded", export
        render = submit(c, "render", {"frames": 2, "seconds_per_frame": 0.01})
        assert wait_for(c, render["id"], ("succeeded", "failed"))["status"] == "succeeded"
        # an upload exists while its import runs (one row per slow batch here)
        more = "id,name,day\n" + "".join(f"{i},N{i},2024-03-04\n" for i in range(3, 200))
        r = c.post(
            "/datasets/import",
            data={"dataset": "people", "mode": "append"},
            files={"file": ("more.csv", more.encode(), "text/csv")},
        )
        assert r.status_code == 201, r.text
        wait_progress(c, r.json()["id"], 1)
        home = srv.home
        names = {p.name for p in tree(home)}
        uploads = [p for p in tree(home) if p.parent.name == "uploads" and p.is_file()]
        assert uploads, sorted(names)
        try:
            assert loose(home) == []
        finally:
            c.post(f"/tasks/{r.json()['id']}/cancel")
    for expected in ("tether.sqlite3", "tether.sqlite3-wal", "secret_key", "exports", "renders"):
        assert expected in names, sorted(names)
    assert any(p.parent.name == "exports" and p.is_file() for p in tree(home)), sorted(names)
    assert mode_of(home) == home_mode  # the test made it: not Tether's to change


def test_existing_home_and_data_dir_keep_their_mode(server: ServerFactory, tmp_path: Path) -> None:
    """A sticky world-writable TETHER_HOME (like /tmp) stays 1777 and a shared 0777
    TETHER_DATA_DIR stays 0777 (they became 0700); Tether's own files and directories
    in them are private all the same. A home that does not exist is created 0700."""
    home, data = tmp_path / "sticky-home", tmp_path / "shared-data"
    for path, mode in ((home, 0o1777), (data, 0o777)):
        path.mkdir()
        path.chmod(mode)
    done = run_tether(home, "migrate", TETHER_DATA_DIR=str(data))
    assert done.returncode == 0, done.stderr
    assert (mode_of(home), mode_of(data)) == (0o1777, 0o777)
    srv = server(workers=1, home=home, TETHER_DATA_DIR=str(data))
    with login(srv) as c:
        r = c.post(
            "/datasets/import",
            data={"dataset": "people"},
            files={"file": ("people.csv", CSV.encode(), "text/csv")},
        )
        assert r.status_code == 201, r.text
        assert wait_for(c, r.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
        r = c.post("/datasets/people/export", json={})
        assert r.status_code == 201, r.text
        assert wait_for(c, r.json()["id"], ("succeeded", "failed"))["status"] == "succeeded"
    assert (mode_of(home), mode_of(data)) == (0o1777, 0o777)
    assert loose(home) == [] and loose(data) == []
    assert {"uploads", "exports"} <= {p.name for p in data.iterdir()}
    assert any(p.is_file() for p in (data / "exports").iterdir())
    assert mode_of(home / "tether.sqlite3") == 0o600
    fresh = tmp_path / "new" / "home"  # (its parent is created too, 0700 as well)
    done = subprocess.run(
        [str(TETHER), "migrate"],
        cwd=tmp_path,
        env=server_env(fresh),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (mode_of(fresh), mode_of(fresh.parent)) == (0o700, 0o700)
    assert mode_of(fresh / "tether.sqlite3") == 0o600


def test_testserver_is_not_an_allowed_host(server: ServerFactory) -> None:
    srv = server(workers=1)
    r = httpx.get(f"{srv.url}/api/v1/health", headers={"Host": "testserver"}, timeout=15)
    assert_error(r, 400, "bad_host")
    assert httpx.get(f"{srv.url}/api/v1/health", timeout=15).status_code == 200
