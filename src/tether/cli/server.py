"""Server-side commands: serve, migrate, createsuperuser, manage."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated

import typer


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
    import django

    django.setup()


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"tether: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def home_lock(home: Path) -> IO[str]:  # type: ignore[misc]
    """Hold ``$TETHER_HOME/serve.lock``: one server per home, so a new one may safely
    recover everything a killed one left behind."""
    f = open(home / "serve.lock", "a+")  # noqa: SIM115 - held for the process lifetime
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise fail(f"another 'tether serve' is using {home} (set TETHER_HOME to run a second "
                   "one)") from None
    try:
        yield f
    finally:
        f.close()


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = 8000,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", min=1, max=256,
        help="Embedded worker slots (default: CPU count).")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations first.")] = True,
) -> None:
    """Run the API server with the embedded worker (state in $TETHER_HOME, default ./.tether)."""
    setup_django()
    import uvicorn
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from tether.executors.embedded import EmbeddedExecutor

    home = Path(settings.TETHER_HOME)
    if not port_free(host, port):
        raise fail(f"port {port} on {host} is in use; choose another with PORT=… or --port")
    with home_lock(home):
        if migrate:
            call_command("migrate", interactive=False, verbosity=0)
        executor = None
        if settings.TETHER["EXECUTOR"] == "embedded":
            executor = EmbeddedExecutor(workers)
            executor.start()
        connection.close()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        typer.echo(f"Tether serving {url}  (API {url}/api/v1/, docs {url}/docs/, "
                   f"admin {url}/admin/)")
        typer.echo(f"  state in {home}, database {connection.vendor}, executor "
                   f"{settings.TETHER['EXECUTOR']}"
                   + (f" with {executor.slots} worker slot(s)" if executor else ""))
        sys.stdout.flush()
        # WSGI: Django's sync views skip the per-middleware thread hops of its ASGI
        # handler, which more than halves request latency (see bench/control_latency.py).
        config = uvicorn.Config("tether.server.wsgi:application", interface="wsgi",
                                host=host, port=port, log_level="warning", access_log=False,
                                lifespan="off")
        # uvicorn re-raises SIGTERM after its own graceful shutdown: turn it into a normal
        # exit so the executor hands running tasks back instead of dying with them.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            uvicorn.Server(config).run()
        finally:
            if executor is not None:
                executor.stop(timeout=10)


def migrate_cmd() -> None:
    """Create or update the database tables."""
    setup_django()
    from django.core.management import call_command

    call_command("migrate", interactive=False)


def createsuperuser() -> None:
    """Create an admin user for /admin/ (asks for name and password)."""
    setup_django()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    call_command("createsuperuser")


def manage(ctx: typer.Context) -> None:
    """Run a Django management command, e.g. `tether manage check --deploy`."""
    setup_django()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["tether manage", *ctx.args])


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Server")(serve)
    app.command("migrate", rich_help_panel="Server")(migrate_cmd)
    app.command(rich_help_panel="Server")(createsuperuser)
    app.command(rich_help_panel="Server", context_settings={
        "allow_extra_args": True, "ignore_unknown_options": True})(manage)
