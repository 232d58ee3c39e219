"""The CLI's connection to a server (a ``tether.client.Client`` for the server of
``--server``/TETHER_SERVER/config), and how failures become one line on stderr and an
exit code: 1 server refused, 2 usage, 3 server unreachable."""

from __future__ import annotations

import os
from typing import Any

from tether import __version__
from tether.client import Client, TetherError, Unauthorized, Unreachable

NOT_LOGGED_IN = "not logged in or token expired/revoked; run `tether login`"
# `tether login` cannot help while TETHER_TOKEN overrides the token it stores
BAD_ENV_TOKEN = (
    "TETHER_TOKEN is invalid, expired or revoked: unset it (to use the token of "
    "`tether login`) or set a valid one"
)
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CliError(Exception):
    """Shown as ``tether: <message>`` on stderr; the program exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def cli_error(exc: TetherError) -> CliError:
    """The one line and exit code of a client error."""
    if isinstance(exc, Unreachable):
        return CliError(
            f"{exc.message}; is `tether serve` running? (set --server or TETHER_SERVER)",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, Unauthorized) and exc.token_rejected:
        return CliError(BAD_ENV_TOKEN if os.environ.get("TETHER_TOKEN") else NOT_LOGGED_IN)
    return CliError(exc.message)


def connect(ctx: Any) -> Client:
    """A Client for the server chosen by ``--server``/TETHER_SERVER/config (``ctx`` is
    the Typer context; the root command stores ``--server`` in ``ctx.obj``)."""
    from tether.cli.config import resolve

    obj = ctx.find_root().obj if ctx is not None else None
    settings = resolve(obj.get("server") if isinstance(obj, dict) else None)
    return Client(settings.server, settings.token, user_agent=f"tether-cli/{__version__}")
