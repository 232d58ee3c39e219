"""The ``tether`` program: server commands here; client commands are added by modules."""

from __future__ import annotations

import typer

from tether.cli import server

app = typer.Typer(
    name="tether",
    help="Tether: long-running tasks you can pause, resume, cancel with rollback and watch.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
server.register(app)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
