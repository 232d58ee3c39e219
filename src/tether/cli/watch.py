"""``tether watch`` (live progress bars, or plain lines when not on a terminal) and
``tether wait``. Both only poll: stopping them never touches the tasks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn

from tether.cli.http import EXIT_UNREACHABLE, EXIT_USAGE, Api, ApiError, CliError, connect
from tether.cli.term import clip

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running", "pausing", "paused", "cancelling")
STATUSES = (*ACTIVE, *FINAL)
POLL = 0.3
T = TypeVar("T")
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


def _fields(task: dict[str, Any]) -> dict[str, Any]:
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


def _fetch(api: Api, task_id: int) -> dict[str, Any] | None:
    try:
        return api.task(task_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _to_stderr(line: str) -> None:
    print(f"tether: {line}", file=sys.stderr, flush=True)


def patiently(call: Callable[[], T], say: Callable[[str], None] = _to_stderr) -> T:
    """``call()``, retried while the server cannot be reached (a restart), for up to
    RECONNECT_SECONDS; ``say`` gets one line when it is lost and one when it is back."""
    lost: float | None = None
    while True:
        try:
            result = call()
        except CliError as exc:
            if exc.code != EXIT_UNREACHABLE:
                raise
            now = time.monotonic()
            if lost is None:
                lost = now
                say(
                    f"the server is unreachable; retrying for up to {RECONNECT_SECONDS:g}s "
                    "(Ctrl-C stops watching, not the tasks)"
                )
            elif now - lost > RECONNECT_SECONDS:
                raise
            time.sleep(1.0)
            continue
        if lost is not None:
            say("the server is back")
        return result


def _poll(
    api: Api,
    ids: list[int],
    latest: dict[int, dict[str, Any] | None],
    say: Callable[[str], None] = _to_stderr,
) -> bool:
    """Refresh every unfinished task; True when all are final (or gone)."""
    for task_id in ids:
        task = latest.get(task_id, {})
        if task is None or task.get("status") in FINAL:
            continue
        if not task:  # a server that was never reached is an error at once
            latest[task_id] = _fetch(api, task_id)
        else:
            latest[task_id] = patiently(partial(_fetch, api, task_id), say)
    return all(t is None or t["status"] in FINAL for t in latest.values())


def _watch_bars(
    api: Api, ids: list[int], latest: dict[int, dict[str, Any] | None], console: Console
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TextColumn("{task.fields[msg]}"),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, refresh_per_second=8) as bars:
        rows: dict[int, TaskID] = {}
        while True:
            done = _poll(api, ids, latest, lambda line: bars.console.print(f"tether: {line}"))
            for task_id in ids:
                task = latest[task_id]
                if task is None:
                    continue
                pct = (task.get("progress") or {}).get("percent")
                if task["status"] == "succeeded":
                    pct = 100.0
                total = 100.0 if isinstance(pct, int | float) else None
                if task_id not in rows:
                    rows[task_id] = bars.add_task(
                        f"#{task_id} {task['type']}", total=total, **_fields(task)
                    )
                bars.update(rows[task_id], total=total, completed=pct or 0, **_fields(task))
            if done:
                bars.refresh()
                return
            time.sleep(POLL)


def _watch_lines(api: Api, ids: list[int], latest: dict[int, dict[str, Any] | None]) -> None:
    shown: dict[int, str] = {}
    while True:
        done = _poll(api, ids, latest)
        for task_id in ids:
            task = latest[task_id]
            status = task["status"] if task else "not found"
            if task and shown.get(task_id) != status and status not in FINAL:
                pct = (task.get("progress") or {}).get("percent")
                extra = f" {pct:.0f}%" if isinstance(pct, int | float) else ""
                print(f"task {task_id} ({task['type']}): {status}{extra}", flush=True)
            shown[task_id] = status
        if done:
            return
        time.sleep(POLL)


def run_watch(api: Api, ids: list[int], *, as_json: bool = False) -> int:
    """Watch ``ids`` until every one is final. Returns the exit code: 0 if all
    succeeded, 1 otherwise, 130 on Ctrl-C. With ``as_json`` only the final tasks are
    printed (as a JSON object for one task, a list for several)."""
    latest: dict[int, dict[str, Any] | None] = {i: {} for i in ids}
    console = Console(highlight=False)
    try:
        if as_json:
            while not _poll(api, ids, latest):
                time.sleep(POLL)
        elif console.is_terminal:
            _watch_bars(api, ids, latest, console)
        else:
            _watch_lines(api, ids, latest)
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
            active = api.task_list(status=",".join(ACTIVE), limit=None)
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
    deadline = None if timeout is None else time.monotonic() + timeout
    with connect(ctx) as api:
        try:
            task = api.task(task_id)
            while True:
                status = task["status"]
                if status in wanted:
                    print(f"task {task_id}: {status}")
                    return
                if status in FINAL:
                    raise CliError(
                        f"{final_line(task_id, task)} (waited for {', '.join(sorted(wanted))})"
                    )
                if deadline is not None and time.monotonic() >= deadline:
                    raise CliError(f"timed out after {timeout:g}s: task {task_id} is {status}")
                time.sleep(POLL)
                task = patiently(lambda: api.task(task_id))
        except KeyboardInterrupt:
            print("stopped waiting; the task keeps running", file=sys.stderr)
            raise typer.Exit(130) from None


def register(app: typer.Typer, panel: str) -> None:
    app.command(rich_help_panel=panel)(watch)
    app.command(rich_help_panel=panel)(wait)
