"""Acceptance: rough edges a new user met in the ``tether`` client, each against a real
server: reserved dataset names, whoami with TETHER_TOKEN, the hint after register, a
listing that is one page of more, help text, output into a pipe, createsuperuser without
a terminal, and API routes with a trailing slash; then what a second pass found: a page
of more in --json, a name refused at upload, a bad TETHER_TOKEN, internal task types,
and ls rows on a terminal."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx

from tests.acceptance.cli_helpers import Cli
from tests.acceptance.conftest import (
    PASSWORD,
    TETHER,
    ServerFactory,
    assert_error,
    login,
    server_env,
    wait_for,
)


def test_reserved_name_whoami_register_hint_and_ls_pages(
    server: ServerFactory, tmp_path: Path
) -> None:
    srv = server(workers=1)
    cli = Cli(srv, tmp_path / "cfg")

    # the server named on the command line (not in the environment) is in the hint,
    # and the hint works as given (--server after the command as well as before it)
    r = cli.run(
        "register", "hank", "--password-stdin", "--server", srv.url,
        input=PASSWORD + "\n", TETHER_SERVER="",
    )  # fmt: skip
    assert r.returncode == 0, r
    assert f"now run `tether login hank --server {srv.url}`" in r.stdout, r
    r = cli.run(
        "login", "hank", "--server", srv.url, "--password-stdin",
        input=PASSWORD + "\n", TETHER_SERVER="",
    )  # fmt: skip
    assert r.returncode == 0 and f"Logged in to {srv.url} as hank" in r.stdout, r
    r = cli.run("register", "ivy", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0 and "now run `tether login ivy`" in r.stdout, r

    # TETHER_TOKEN of another user: whoami names the token's user, not the stored one
    with srv.client() as anon:
        ivy_token = anon.post(
            "/auth/token", json={"username": "ivy", "password": PASSWORD, "name": "ci"}
        ).json()["token"]
    r = cli.run("whoami", TETHER_TOKEN=ivy_token)
    assert r.returncode == 0 and "user:     ivy\n" in r.stdout, r
    assert "hank" not in r.stdout and "ci …" in r.stdout and "TETHER_TOKEN" in r.stdout, r
    assert cli.json("whoami")["username"] == "hank"
    me = cli.run("whoami", "--json", TETHER_TOKEN=ivy_token)
    assert '"username": "ivy"' in me.stdout, me

    # "import" is reserved: the server's message, exit 2, nothing uploaded
    csv_file = tmp_path / "small.csv"
    csv_file.write_text("a,b\n1,2\n")
    for mode in ("create", "append", "replace"):
        r = cli.run("import", str(csv_file), "--dataset", "import", "--mode", mode)
        assert r.returncode == 2, r
        assert r.stderr.startswith("tether: ") and "'import' is a reserved name" in r.stderr, r
        assert "Method" not in r.stderr and "Traceback" not in r.stderr, r
    assert cli.json("datasets") == []

    # 67 tasks: ls shows the first 50 and says so; --all-pages shows them all
    with srv.client(cli.token()) as api:
        for i in range(67):
            body = {"type": "add", "params": {"operand1": i, "operand2": 1}}
            assert api.post("/tasks", json=body).status_code == 201
    r = cli.run("ls")
    assert r.returncode == 0, r
    assert "50 of 67; --all-pages" in r.stderr, r
    assert len([line for line in r.stdout.splitlines() if " add " in line]) == 50, r.stdout
    r = cli.run("ls", "--all-pages")
    assert r.returncode == 0 and "of 67" not in r.stderr, r
    assert len([line for line in r.stdout.splitlines() if " add " in line]) == 67, r.stdout
    assert len(cli.json("ls", "--all-pages")) == 67
    assert len(cli.json("ls", "--limit", "60")) == 60
    assert "60 of 67" in cli.run("ls", "--limit", "60").stderr


def test_output_into_a_pipe_is_whole_and_help_shows_what_to_type(
    server: ServerFactory, tmp_path: Path
) -> None:
    cli = Cli(server(workers=1), tmp_path / "cfg")
    cli.login("june")
    names = [f"a_rather_long_column_name_{i:02d}" for i in range(8)]
    long_cell = "x" * 150
    source = tmp_path / "wide.csv"
    source.write_text(",".join(names) + "\n" + ",".join([long_cell] * len(names)) + "\n")
    tid = cli.ok("import", str(source), "--dataset", "wide").strip()
    cli.ok("wait", tid, "--timeout", "60")
    columns = ", ".join(f"{n}:text" for n in names)  # 280 characters

    listing = cli.ok("datasets")
    assert columns in listing and "…" not in listing, listing
    shown = cli.ok("datasets", "wide", "--rows", "1")
    assert f"columns:      {columns}\n" in shown, shown
    assert long_cell in shown and "…" not in shown, shown
    # a table row stays on one line, however wide
    assert any(line.count(long_cell) == len(names) for line in shown.splitlines()), shown

    for args in (
        ("import", "--help"),
        ("submit", "--help"),
        ("ls", "--help"),
        ("pause", "--help"),
        ("watch", "--help"),
        ("datasets", "rm", "--help"),
        ("createsuperuser", "--help"),
        ("--help",),
    ):
        text = cli.ok(*args)
        assert "<bool>" not in text and "<list[" not in text and " any " not in text, text
    text = cli.ok("import", "--help")
    assert "{create,append,replace}" in text and "{fail,skip}" in text, text
    assert "Usage: tether import [OPTIONS] FILE " in text, text
    assert "Usage: tether pause [OPTIONS] ID... " in cli.ok("pause", "--help")


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_json_pages_upload_refusals_env_token_internal_types_and_ls_rows(
    server: ServerFactory, tmp_path: Path
) -> None:
    srv = server(workers=1)
    cli = Cli(srv, tmp_path / "cfg")
    cli.login("kim")

    # 61 tasks: ls --json prints 50 and says so on stderr; stdout is JSON alone
    with srv.client(cli.token()) as api:
        for i in range(61):
            body = {"type": "add", "params": {"operand1": i, "operand2": 1}}
            assert api.post("/tasks", json=body).status_code == 201
    r = cli.run("ls", "--json")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 50, r
    assert "50 of 61; --all-pages" in r.stderr, r
    r = cli.run("ls", "--json", "--all-pages")
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 61 and r.stderr == "", r

    # a name the server refuses only when the upload arrives: its message, exit 2
    csv_file = tmp_path / "abc.csv"
    csv_file.write_text("a,b\n1,2\n")
    r = cli.run("import", str(csv_file), "--dataset", "IMPORT")
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.startswith("tether: ") and "'IMPORT' is a reserved name" in r.stderr, r
    assert len(r.stderr.splitlines()) == 1, r
    assert cli.json("datasets") == []

    # a token from TETHER_TOKEN that the server refuses: `tether login` cannot help
    for command in ("whoami", "ls"):
        r = cli.run(command, TETHER_TOKEN="garbage")
        assert r.returncode == 1 and "TETHER_TOKEN is invalid" in r.stderr, r
        assert "run `tether login`" not in r.stderr and "unset it" in r.stderr, r

    # internal task types: how to start them instead, exit 2 (with -p too)
    for extra in ((), ("-p", "upload=1", "-p", "dataset=x")):
        r = cli.run("submit", "csv_import", *extra)
        assert r.returncode == 2, r
        assert "csv_import is internal: use `tether import FILE --dataset NAME`" in r.stderr, r
    r = cli.run("submit", "csv_export", "-p", "dataset=x")
    assert r.returncode == 2 and "use `tether export NAME -o FILE`" in r.stderr, r
    r = cli.run("submit", "no_such_type", "-p", "n=1")
    assert r.returncode == 2 and "unknown task type 'no_such_type'" in r.stderr, r
    assert "fibonacci" in r.stderr, r  # the server names the types there are
    assert "csv_import" not in cli.ok("ls", "--all-pages", "--status", "failed")

    # long messages: on a terminal one line per task, cut with …; in a pipe whole
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n" + "x" * 200 + ",1\n")
    failing = [cli.ok("import", str(bad), "--dataset", "bad", "--columns", "a:integer,b:integer")]
    failing += [cli.ok("submit", name) for name in ("always_fails", "not_json")]
    for tid in failing:
        cli.ok("wait", tid.strip(), "--until", "failed", "--timeout", "60")
    code, screen = cli.run_in_pty("ls", "--status", "failed")
    assert code == 0, screen
    rows = [ANSI.sub("", line) for line in screen.splitlines() if "│" in line]
    assert len(rows) == 3 and all(len(row) <= 120 for row in rows), screen
    by_type = {row.split("│")[2].strip(): row for row in rows}
    assert by_type["csv_import"].endswith("… │") and "DataError: line 2: " in screen, screen
    assert "ValueError: always fails (attempt 2) " in by_type["always_fails"], screen
    piped = cli.ok("ls", "--status", "failed")
    for whole in ("$.sum is inf", "always fails (attempt 2)", "' is not an integer"):
        assert whole in piped, piped


def test_createsuperuser_without_a_terminal(server: ServerFactory, tmp_path: Path) -> None:
    srv = server(workers=1)

    def createsuperuser(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TETHER), "createsuperuser", *args],
            cwd=srv.home,
            env=server_env(srv.home, **env),
            stdin=subprocess.DEVNULL,  # not a terminal
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    r = createsuperuser()
    assert r.returncode == 2 and r.stdout == "", r
    assert len(r.stderr.strip().splitlines()) == 1, r
    for words in ("--noinput", "DJANGO_SUPERUSER_USERNAME", "DJANGO_SUPERUSER_PASSWORD"):
        assert words in r.stderr, r
    r = createsuperuser("--noinput", DJANGO_SUPERUSER_USERNAME="boss")
    assert r.returncode == 2 and "DJANGO_SUPERUSER_PASSWORD is not set" in r.stderr, r

    admin = {
        "DJANGO_SUPERUSER_USERNAME": "boss",
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
        "DJANGO_SUPERUSER_EMAIL": "boss@example.org",
    }
    r = createsuperuser("--noinput", **admin)
    assert r.returncode == 0, r
    r = createsuperuser("--noinput", **admin)
    assert r.returncode == 2 and r.stderr.strip() == "tether: That username is already taken.", r
    with srv.client() as anon:
        token = anon.post("/auth/token", json={"username": "boss", "password": PASSWORD})
        assert token.status_code == 200, token.text
    with srv.client(token.json()["token"]) as api:
        assert api.get("/auth/me").json()["is_staff"] is True


def test_api_routes_take_a_trailing_slash_without_a_redirect(
    server: ServerFactory, tmp_path: Path
) -> None:
    srv = server(workers=1)
    with login(srv) as api:
        r = api.post("/tasks/", json={"type": "add", "params": {"operand1": 2, "operand2": 3}})
        assert r.status_code == 201, r.text
        tid = r.json()["id"]
        assert r.json()["params"] == {"operand1": 2, "operand2": 3}
        wait_for(api, tid, "succeeded", timeout=30)
        listed = api.get("/tasks/")
        assert listed.status_code == 200 and tid in [t["id"] for t in listed.json()["results"]]
        for path in (f"/tasks/{tid}/", f"/tasks/{tid}/events/", "/task-types/", "/health/"):
            assert api.get(path).status_code == 200, path
        assert api.get("/auth/me/").json()["username"] == api.get("/auth/me").json()["username"]
        assert_error(api.post(f"/tasks/{tid}/pause/", json={}), 409, "illegal_transition")
        assert api.get("/datasets/").json() == []
        # GET/DELETE /datasets/import ask for a dataset named "import": a clear 400
        for method in ("GET", "DELETE"):
            for path in ("/datasets/import", "/datasets/import/"):
                error = assert_error(api.request(method, path), 400)
                assert "'import' is a reserved name" in error["message"], error
        assert_error(api.get("/tasks//"), 404)
        schema = httpx.get(f"{srv.url}/api/schema/", params={"format": "json"}, timeout=15)
        paths = [p for p in schema.json()["paths"] if p.startswith("/api/v1/")]
        assert "/api/v1/tasks" in paths and "/api/v1/auth/me" in paths, paths
        assert not [p for p in paths if p.endswith("/")], paths  # each route listed once
