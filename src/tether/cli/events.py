"""``tether events``: the live event stream as JSON lines, until Ctrl-C."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from tether.cli.connection import EXIT_USAGE, CliError, connect
from tether.cli.watch import RECONNECT_SECONDS, Voice
from tether.client import StreamUnavailable
from tether.client.client import Tasks


def events(
    ctx: typer.Context,
    task_ids: Annotated[
        list[int] | None,
        typer.Argument(
            metavar="[ID...]", help="Task ids (default: all your tasks; none with --pipeline)."
        ),
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            "--since", metavar="N", min=0, help="First replay the status events after event N."
        ),
    ] = None,
    everyone: Annotated[
        bool, typer.Option("--all", help="Every user's tasks (staff only).")
    ] = False,
    pipelines: Annotated[
        list[int] | None,
        typer.Option(
            "--pipeline",
            metavar="ID",
            min=1,
            help="A pipeline: its own events and all its steps' (repeatable).",
        ),
    ] = None,
) -> None:
    """Print live events (status changes and progress) as JSON lines until Ctrl-C.

    Each line is one event: {"kind": "status", "id": N, "task": ID, "from": …, "to": …,
    "at", "actor", "reason", …} or {"kind": "progress", "id": null, "task": ID,
    "progress": {…}}; with --pipeline also {"kind": "pipeline", "pipeline": ID, "from",
    "to", …}. A lost connection is resumed from the last status event seen: none is
    lost or printed twice."""
    if everyone and task_ids:
        raise CliError("give task ids or --all, not both", EXIT_USAGE)
    tasks: Tasks = (
        list(task_ids) if task_ids else "all" if everyone else [] if pipelines else "mine"
    )
    voice = Voice()
    with connect(ctx) as api:
        try:
            with api.events(
                tasks,
                since,
                pipelines=pipelines or (),
                retry_for=RECONNECT_SECONDS,
                notify=voice.notify,
            ) as stream:
                for event in stream:
                    sys.stdout.write(json.dumps(event) + "\n")
                    sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(0) from None
        except BrokenPipeError:  # the reader went away (`tether events | head`): done
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except StreamUnavailable as exc:
            raise CliError(f"{exc.message}: `tether events` needs a newer server") from None


def register(app: typer.Typer, panel: str) -> None:
    app.command(rich_help_panel=panel)(events)
