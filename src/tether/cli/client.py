"""Client commands: talk to a Tether server over HTTP only (no Django import)."""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tether.cli import config, events, watch
from tether.cli.connection import EXIT_USAGE, CliError, cli_error, connect
from tether.cli.params import convert, describe_params, load_params_file
from tether.cli.term import console, one_line_table
from tether.client import ApiError, Unauthorized

PANEL = "Client"
JSON_OPT = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
out = console()
err = console(stderr=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def when(value: str | None) -> str:
    """An ISO timestamp from the server, shown in local time."""
    if not value:
        return "-"
    try:
        return (
            datetime.fromisoformat(value.replace("Z", "+00:00"))
            .astimezone()
            .strftime("%Y-%m-%d %H:%M:%S")
        )
    except ValueError:
        return value


def read_password(from_stdin: bool, confirm: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("no password on stdin", EXIT_USAGE)
        return password
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))


USER_ARG = Annotated[str | None, typer.Argument(help="Your user name (asked if missing).")]
STDIN_OPT = Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")]


def register_cmd(
    ctx: typer.Context, username: USER_ARG = None, password_stdin: STDIN_OPT = False
) -> None:
    """Create an account on the server."""
    username = username or str(typer.prompt("Username"))
    password = read_password(password_stdin, confirm=True)
    with connect(ctx) as api:
        api.register(username, password)
        # name the server unless a plain `tether login` would find it again
        again = "" if config.resolve(None).server == api.server else f" --server {api.server}"
        out.print(
            f"Registered {username} on {api.server}; now run `tether login {username}{again}`"
        )


def login(ctx: typer.Context, username: USER_ARG = None, password_stdin: STDIN_OPT = False) -> None:
    """Get an API token and store it in the config file."""
    username = username or str(typer.prompt("Username"))
    password = read_password(password_stdin, confirm=False)
    with connect(ctx) as api:
        data = api.login(username, password, name=f"cli@{socket.gethostname()}"[:100])
        stored = config.load()
        stored.update(server=api.server, token=data["token"], username=username)
        path = config.save(stored)
        out.print(
            f"Logged in to {api.server} as {username} (token expires "
            f"{when(data.get('expires_at'))})"
        )
        err.print(f"token stored in {path}", style="dim")


def logout(ctx: typer.Context) -> None:
    """Revoke the token on the server and forget it."""
    with connect(ctx) as api:
        if not api.token:
            raise CliError("not logged in")
        try:
            api.logout()
            note = ""
        except Unauthorized:
            note = " (the token was already invalid)"
        stored = config.load()
        if stored.get("token") == api.token:
            stored.pop("token", None)
            config.save(stored)
        out.print(f"Logged out of {api.server}{note}")


def whoami(ctx: typer.Context, as_json: JSON_OPT = False) -> None:
    """Show the server, the user and the token's expiry (asks the server whose token it is)."""
    with connect(ctx) as api:
        me = api.me()
        server = api.server
    current = me.get("token")
    if as_json:
        emit_json({"server": server, "username": me["username"], "token": current})
        return
    out.print(f"server:   {server}")
    out.print(f"user:     {me['username']}{' (staff)' if me.get('is_staff') else ''}")
    if current:
        source = " (from TETHER_TOKEN)" if os.environ.get("TETHER_TOKEN") else ""
        out.print(
            f"token:    {current.get('name') or '-'} …{current.get('hint', '')}, "
            f"expires {when(current.get('expires_at'))}{source}"
        )


def types(ctx: typer.Context, as_json: JSON_OPT = False) -> None:
    """List the task types the server can run (* = required param)."""
    with connect(ctx) as api:
        data = api.types()
    if as_json:
        emit_json(data)
        return
    table = Table("name", "queue", "params (* required)", "description")
    for t in data:
        table.add_row(
            t["name"],
            t["queue"],
            describe_params(t.get("params_schema") or {}),
            " ".join((t.get("description") or "").split("\n\n")[0].split()),
        )
    out.print(table)


def submit(
    ctx: typer.Context,
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="Task type (see `types`).")],
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", "-p", help="key=value, typed by the task type's schema; repeatable."
        ),
    ] = None,
    params_file: Annotated[
        str | None, typer.Option("--params", help="JSON object file with the params ('-' = stdin).")
    ] = None,
    queue: Annotated[str | None, typer.Option(help="Queue (default: the type's).")] = None,
    pause_timeout: Annotated[
        float | None, typer.Option(help="Seconds a pause may last before the task is cancelled.")
    ] = None,
    watch_it: Annotated[bool, typer.Option("--watch", help="Watch it until it ends.")] = False,
    as_json: JSON_OPT = False,
) -> None:
    """Submit a task; prints its id."""
    params = load_params_file(params_file) if params_file else {}
    pairs = []
    for item in param or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CliError(f"-p {item}: use key=value", EXIT_USAGE)
        pairs.append((key.strip(), raw))
    with connect(ctx) as api:
        if pairs:
            known = {t["name"]: t for t in api.types()}
            # a type missing here is unknown or internal: the server below says which
            schema = known.get(type_name, {}).get("params_schema") or {}
            props = schema.get("properties") or {}
            for key, raw in pairs:
                params[key] = convert(key, raw, props.get(key) or {"type": "string"})
        try:
            task = api.submit(type_name, params, queue=queue, pause_timeout=pause_timeout)
        except ApiError as exc:
            raise refused_type(type_name, exc) from None
        if as_json and not watch_it:
            emit_json(task)
            return
        if not as_json:
            out.print(task["id"])
        if watch_it:
            sys.stdout.flush()
            raise typer.Exit(watch.run_watch(api, [int(task["id"])], as_json=as_json))


# How users start the internal task types, which the server refuses to take from them.
INTERNAL_HINTS = {
    "csv_import": "tether import FILE --dataset NAME",
    "csv_export": "tether export NAME -o FILE",
}


def refused_type(type_name: str, exc: ApiError) -> CliError:
    """``exc`` as a usage error (exit 2) when it refuses the type itself (unknown or
    internal); any other refusal as itself."""
    if exc.code == "internal_task_type":
        hint = INTERNAL_HINTS.get(type_name)
        return CliError(
            f"{type_name} is internal: use `{hint}`" if hint else exc.message, EXIT_USAGE
        )
    if exc.code == "unknown_task_type":
        return CliError(exc.message, EXIT_USAGE)
    return cli_error(exc)


def percent_of(task: dict[str, Any]) -> str:
    pct = (task.get("progress") or {}).get("percent")
    return f"{pct:.0f}%" if isinstance(pct, int | float) else "-"


def ls(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="Only these statuses (comma-separated).")
    ] = None,
    type_name: Annotated[str | None, typer.Option("--type", help="Only this task type.")] = None,
    all_pages: Annotated[bool, typer.Option("--all-pages", help="Every task, not a page.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many tasks.")] = 50,
    as_json: JSON_OPT = False,
) -> None:
    """List your tasks, newest first."""
    with connect(ctx) as api:
        tasks, count = api.tasks_counted(
            status=status, type_name=type_name, limit=None if all_pages else limit
        )
    if as_json:
        emit_json(tasks)
    else:
        out.print(task_table(tasks, out))
    say_if_more(len(tasks), count)


def say_if_more(shown: int, count: int) -> None:
    """Tell when a listing shows a page only: on stderr, also with --json, so that a
    shell pipeline never loses rows unsaid."""
    if count > shown:
        err.print(f"{shown} of {count}; --all-pages (or --limit N) shows more", style="dim")


def task_table(tasks: list[dict[str, Any]], con: Console) -> Table:
    """The ``ls`` table: one line per task on a terminal, its message cut to fit."""
    rows = []
    for t in tasks:
        message = (t.get("progress") or {}).get("message") or t.get("error") or ""
        rows.append(
            (
                str(t["id"]),
                str(t["type"]),
                str(t["status"]),
                percent_of(t),
                when(t.get("created_at")),
                str(message).split("\n")[0],
            )
        )
    return one_line_table(con, ("id", "type", "status", "progress", "created", "message"), rows)


ID_ARG = Annotated[int, typer.Argument(metavar="ID", help="Task id.")]


def show(ctx: typer.Context, task_id: ID_ARG, as_json: JSON_OPT = False) -> None:
    """Show one task: status, progress, result, error, attempts, timestamps."""
    with connect(ctx) as api:
        task = api.task(task_id)
    if as_json:
        emit_json(task)
        return
    p = task.get("progress") or {}
    rows: list[tuple[str, Any]] = [
        ("id", task["id"]),
        ("type", task["type"]),
        ("queue", task.get("queue")),
        ("owner", task.get("owner")),
        ("status", task["status"]),
        ("params", json.dumps(task.get("params"))),
    ]
    if p:
        done = f"{p.get('done')}/{p.get('total') or '?'} {p.get('unit') or ''}".strip()
        extra = [f"{percent_of(task)}"] if p.get("percent") is not None else []
        if p.get("rate") is not None:
            extra.append(f"{p['rate']:g} {p.get('unit') or 'units'}/s")
        if p.get("eta_seconds") is not None:
            extra.append(f"eta {p['eta_seconds']:g}s")
        rows.append(("progress", f"{done} ({', '.join(extra)})" if extra else done))
        if p.get("message"):
            rows.append(("message", p["message"]))
    if task.get("result") is not None:
        rows.append(("result", json.dumps(task["result"])))
    if task.get("error"):
        rows.append(("error", task["error"]))
    rows.append(("attempts", f"{task.get('attempts')}/{task.get('max_attempts')}"))
    if task.get("recoveries"):  # re-queued after a lost worker or server
        rows.append(("recoveries", f"{task['recoveries']}/{task.get('max_recoveries')}"))
    rows.append(("pause timeout", f"{task.get('pause_timeout')}s"))
    for key in ("created_at", "started_at", "paused_at", "finished_at", "updated_at"):
        if task.get(key):
            rows.append((key.removesuffix("_at"), when(task[key])))
    for key, value in rows:
        out.print(f"[bold]{key + ':':<14}[/bold] {value}", markup=True, soft_wrap=True)


def history(ctx: typer.Context, task_id: ID_ARG, as_json: JSON_OPT = False) -> None:
    """Show a task's status history, oldest first."""
    with connect(ctx) as api:
        events = api.history(task_id)
    if as_json:
        emit_json(events)
        return
    table = Table("at", "from → to", "actor", "reason")
    for e in events:
        table.add_row(
            when(e.get("at")),
            f"{e.get('from_status') or '-'} → {e['to_status']}",
            e.get("actor") or "",
            e.get("reason") or "",
        )
    out.print(table)


def result(ctx: typer.Context, task_id: ID_ARG, as_json: JSON_OPT = False) -> None:
    """Print a succeeded task's result as JSON."""
    with connect(ctx) as api:
        task = api.task(task_id)
    if task["status"] != "succeeded":
        why = f": {task['error']}" if task.get("error") else ""
        raise CliError(f"task {task_id} has no result: it is {task['status']}, not succeeded{why}")
    emit_json(task.get("result"))


def control(action: str) -> Any:
    def command(
        ctx: typer.Context,
        task_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Task ids.")],
    ) -> None:
        failed = False
        with connect(ctx) as api:
            for task_id in task_ids:
                try:
                    task = getattr(api, action)(task_id)
                except ApiError as exc:
                    if isinstance(exc, Unauthorized):
                        raise
                    failed = True
                    message = "not found" if exc.status == 404 else exc.message
                    err.print(f"task {task_id}: {message}")
                    continue
                out.print(f"task {task_id}: {task['status']}")
        if failed:
            raise typer.Exit(1)

    command.__name__ = action
    command.__doc__ = {
        "pause": "Pause tasks (they continue later from their checkpoint).",
        "resume": "Resume paused tasks.",
        "cancel": "Cancel tasks (their rollback undoes their effects).",
    }[action]
    return command


def register(app: typer.Typer) -> None:
    app.command("register", rich_help_panel=PANEL)(register_cmd)
    for command in (login, logout, whoami, types, submit, ls, show, history, result):
        app.command(rich_help_panel=PANEL)(command)
    for action in ("pause", "resume", "cancel"):
        app.command(action, rich_help_panel=PANEL)(control(action))
    watch.register(app, PANEL)
    events.register(app, PANEL)
