"""The ``tether`` program: server commands and the HTTP client commands."""

from __future__ import annotations

import sys
from typing import Annotated

import httpx
import typer

from tether.cli import client, datasets, pipelines, scaffold, server, tidy
from tether.cli.connection import CliError, cli_error
from tether.client import TetherError

app = typer.Typer(
    name="tether",
    help="Tether: long-running tasks you can pause, resume, cancel with rollback and watch.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            show_default=False,
            help="Tether server for client commands (default: $TETHER_SERVER, the logged-in "
            "server, else http://127.0.0.1:8000).",
        ),
    ] = None,
) -> None:
    """Tether: long-running tasks you can pause, resume, cancel with rollback and watch."""
    ctx.obj = {"server": server_url}


server.register(app)
client.register(app)
datasets.register(app)
pipelines.register(app)
scaffold.register(app)


def main() -> None:
    """Run the app; our errors, the client's and any HTTP failure become one line on
    stderr."""
    try:
        tidy.prepare(typer.main.get_command(app))(prog_name="tether")
    except (CliError, TetherError) as exc:
        error = exc if isinstance(exc, CliError) else cli_error(exc)
        print(f"tether: {error.message}", file=sys.stderr)
        sys.exit(error.code)
    except httpx.HTTPError as exc:
        print(f"tether: HTTP error: {exc}", file=sys.stderr)
        sys.exit(3 if isinstance(exc, httpx.TransportError) else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
