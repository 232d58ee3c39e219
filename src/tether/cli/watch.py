"""``tether watch`` (live progress bars, or plain lines when not on a terminal),
``tether wait`` and ``tether events``. They follow the server's event stream; a server
without one is polled, and they say so. Stopping them never touches the tasks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)

from tether.cli.connection import EXIT_USAGE, CliError, connect
from tether.cli.term import clip
from tether.client import Client, Follower, Notice, WaitTimeout

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running", "pausing", "paused", "cancelling")
STATUSES = (*ACTIVE, *FINAL)
POLL = 0.3  # seconds between polls of a server without an event stream
RECONNECT_SECONDS = 120.0  # how long watch and wait outlast an unreachable server
STATUS_STYLE = {
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
    "paused": "cyan",
    "pausing": "cyan",
    "cancelling": "yellow",
}


def _fmt_eta(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar_fields(task: dict[str, Any]) -> dict[str, Any]:
    p = task.get("progress") or {}
    rate = p.get("rate")
    unit = p.get("unit") or "it"
    status = task["status"]
    return {
        "rate": f"{rate:.1f} {unit}/s" if isinstance(rate, int | float) else "",
        "eta": _fmt_eta(p.get("eta_seconds")) if status not in FINAL else "",
        "msg": str(p.get("message") or task.get("error") or "")[:40],
        "status": f"[{STATUS_STYLE.get(status, 'blue')}]{status}[/]",
    }


def final_line(task_id: int, task: dict[str, Any] | None) -> str:
    if task is None:
        return f"task {task_id}: not found"
    line = f"task {task_id} ({task['type']}): {task['status']}"
    if task["status"] == "succeeded" and task.get("result") is not None:
        line += f" {clip(json.dumps(task['result']), 120 if sys.stdout.isatty() else None)}"
    elif task.get("error"):
        line += f": {task['error']}"
    return line


class Voice:
    """Says the client's notices (server lost, back, polling) as one line each, on
    stderr or, while bars are drawn, above them."""

    def __init__(self) -> None:
        self.say: Callable[[str], None] = _to_stderr

    def notify(self, notice: Notice, detail: str) -> None:
        if notice is Notice.LOST:
            self.say(
                f"the server is unreachable; retrying for up to {RECONNECT_SECONDS:g}s "
                "(Ctrl-C stops watching, not the tasks)"
            )
        elif notice is Notice.BACK:
            self.say("the server is back")
        elif notice is Notice.POLLING:
            self.say(f"{detail}; polling every {POLL:g}s instead")


def _to_stderr(line: str) -> None:
    print(f"tether: {line}", file=sys.stderr, flush=True)


def follow(api: Client, ids: list[int], voice: Voice) -> Follower:
    """The tasks ``ids`` followed on the event stream, or polled when it is missing."""
    return api.follow(ids, poll_interval=POLL, notify=voice.notify, retry_for=RECONNECT_SECONDS)


def bar_columns() -> tuple[ProgressColumn, ...]:
    """A task's bar: description, bar, percent, rate, ETA, message, status."""
    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[msg]}"),
        TextColumn("{task.fields[status]}"),
    )


def _watch_bars(follower: Follower, console: Console, voice: Voice) -> None:
    columns = bar_columns()
    with Progress(*columns, console=console, refresh_per_second=8) as bars:
        rows: dict[int, TaskID] = {}
        voice.say = lambda line: bars.console.print(f"tether: {line}")
        while True:
            for task_id in follower.ids:
                task = follower.latest[task_id]
                if task is None:
                    continue
                pct = (task.get("progress") or {}).get("percent")
                if task["status"] == "succeeded":
                    pct = 100.0
                total = 100.0 if isinstance(pct, int | float) else None
                if task_id not in rows:
                    rows[task_id] = bars.add_task(
                        f"#{task_id} {task['type']}", total=total, **bar_fields(task)
                    )
                bars.update(rows[task_id], total=total, completed=pct or 0, **bar_fields(task))
            if follower.done:
                bars.refresh()
                return
            follower.next(0.5)


def _watch_lines(follower: Follower) -> None:
    shown: dict[int, str] = {}
    while True:
        for task_id in follower.ids:
            task = follower.latest[task_id]
            status = task["status"] if task else "not found"
            if task and shown.get(task_id) != status and status not in FINAL:
                pct = (task.get("progress") or {}).get("percent")
                extra = f" {pct:.0f}%" if isinstance(pct, int | float) else ""
                print(f"task {task_id} ({task['type']}): {status}{extra}", flush=True)
            shown[task_id] = status
        if follower.done:
            return
        follower.next(0.5)


def run_watch(api: Client, ids: list[int], *, as_json: bool = False) -> int:
    """Watch ``ids`` until every one is final. Returns the exit code: 0 if all
    succeeded, 1 otherwise, 130 on Ctrl-C. With ``as_json`` only the final tasks are
    printed (as a JSON object for one task, a list for several)."""
    console = Console(highlight=False)
    voice = Voice()
    try:
        with follow(api, ids, voice) as follower:
            if as_json:
                while not follower.done:
                    follower.next(1.0)
            elif console.is_terminal:
                _watch_bars(follower, console, voice)
            else:
                _watch_lines(follower)
            latest = follower.latest
    except KeyboardInterrupt:
        print("stopped watching; tasks keep running", file=sys.stderr, flush=True)
        return 130
    if as_json:
        found = [t for t in latest.values() if t is not None]
        sys.stdout.write(
            json.dumps(found[0] if len(ids) == 1 and found else found, indent=2) + "\n"
        )
    else:
        for task_id in ids:
            print(final_line(task_id, latest[task_id]), flush=True)
    ok = all(t is not None and t["status"] == "succeeded" for t in latest.values())
    return 0 if ok else 1


def watch(
    ctx: typer.Context,
    task_ids: Annotated[
        list[int] | None,
        typer.Argument(metavar="[ID...]", help="Task ids (default: all your active tasks)."),
    ] = None,
) -> None:
    """Watch tasks live until they end (Ctrl-C stops watching, not the tasks)."""
    with connect(ctx) as api:
        ids = list(task_ids or [])
        if not ids:
            active = api.tasks(status=",".join(ACTIVE), limit=None)
            ids = sorted(int(t["id"]) for t in active)
            if not ids:
                print("no active tasks")
                return
        raise typer.Exit(run_watch(api, ids))


def wait(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", help="Task id.")],
    until: Annotated[
        str, typer.Option(help="Status(es) to wait for, comma-separated.")
    ] = "succeeded",
    timeout: Annotated[float | None, typer.Option(min=0, help="Give up after SECONDS.")] = None,
) -> None:
    """Wait until a task reaches a status (exit 1 if it ends otherwise or times out)."""
    wanted = {s.strip() for s in until.split(",") if s.strip()}
    bad = sorted(wanted - set(STATUSES))
    if bad or not wanted:
        raise CliError(
            f"--until: unknown status {bad[0] if bad else until!r}; use {', '.join(STATUSES)}",
            EXIT_USAGE,
        )
    voice = Voice()
    with connect(ctx) as api:
        try:
            task = api.wait(
                task_id,
                timeout,
                until=wanted,
                poll_interval=POLL,
                notify=voice.notify,
                retry_for=RECONNECT_SECONDS,
            )
        except WaitTimeout as exc:
            status = exc.task["status"]
            raise CliError(f"timed out after {timeout:g}s: task {task_id} is {status}") from None
        except KeyboardInterrupt:
            print("stopped waiting; the task keeps running", file=sys.stderr)
            raise typer.Exit(130) from None
    if task["status"] not in wanted:  # it ended otherwise
        raise CliError(f"{final_line(task_id, task)} (waited for {', '.join(sorted(wanted))})")
    print(f"task {task_id}: {task['status']}")


def register(app: typer.Typer, panel: str) -> None:
    app.command(rich_help_panel=panel)(watch)
    app.command(rich_help_panel=panel)(wait)
