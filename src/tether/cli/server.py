"""Server-side commands: serve, migrate, createsuperuser, manage."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from tether.redaction import redact

if TYPE_CHECKING:
    from tether.executors import Executor


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
    import django
    from django.conf import settings

    try:
        settings.INSTALLED_APPS  # noqa: B018 - loads the settings, which read TETHER_*
    except ValueError as exc:  # a TETHER_* value that cannot be used: say which, exit 2
        raise fail(str(exc), 2) from None
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
        raise fail(
            f"another 'tether serve' is using {home} (set TETHER_HOME to run a second one)"
        ) from None
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


WS_MAX_FRAME = 1024 * 1024  # a bigger WebSocket frame closes the connection (1009)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-w", min=1, max=256, help="Embedded worker slots (default: CPU count)."
        ),
    ] = None,
    migrate: Annotated[bool, typer.Option(help="Apply database migrations first.")] = True,
) -> None:
    """Run the API server with the embedded worker (state in $TETHER_HOME, default ./.tether)."""
    setup_django()
    import uvicorn
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from tether import executors

    home = Path(settings.TETHER_HOME)
    broker = str(settings.TETHER["BROKER_URL"])
    executor = configured_executor(workers=workers)
    check_services(broker if executor.capabilities.needs_broker else None)
    if not port_free(host, port):
        raise fail(f"port {port} on {host} is in use; choose another with PORT=… or --port")
    with home_lock(home):
        if migrate:
            call_command("migrate", interactive=False, verbosity=0)
        executors.install(executor)  # the API reaches it through executors.current()
        executor.start()
        from tether.events import transport

        if executor.capabilities.remote_events:  # hear the events of the worker processes
            transport.start_for_serve()
        connection.close()
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        typer.echo(
            f"Tether serving {url}  (API {url}/api/v1/, docs {url}/docs/, admin {url}/admin/)"
        )
        typer.echo(
            f"  state in {home}, database {connection.vendor}, executor {executor.name}"
            + (
                f" with {executor.slots} worker slot(s)"
                if executor.capabilities.in_process
                else f" (tasks run in `tether worker`; broker {redact(broker)})"
            )
        )
        sys.stdout.flush()
        # HTTP (Django through WSGI, as before) and WebSocket from one ASGI app
        from tether.server.asgi import Server, application

        config = uvicorn.Config(
            application,
            interface="asgi3",
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="websockets-sansio",
            ws_max_size=WS_MAX_FRAME,
            ws_per_message_deflate=False,  # event frames are small; deflate costs CPU per client
            # uvicorn would take the client address from X-Forwarded-For of any local
            # peer; Tether decides which proxies to believe (TETHER_TRUSTED_PROXIES)
            proxy_headers=False,
        )
        # uvicorn re-raises SIGTERM after its own graceful shutdown: turn it into a normal
        # exit so the executor hands running tasks back instead of dying with them.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            Server(config).run()
        finally:
            executor.stop(timeout=10)
            transport.stop()


def configured_executor(**options: Any) -> Executor:
    """The executor TETHER_EXECUTOR names, once its system check finds no error (else
    exit 2 with the first one); warnings are printed."""
    from django.core.checks import ERROR

    from tether import executors

    try:
        executor = executors.build(**options)
    except executors.UnknownExecutor as exc:
        raise fail(str(exc), 2) from None
    for problem in executor.check():
        if problem.level >= ERROR:
            raise fail(f"{problem.msg} ({problem.id})", 2)
        typer.echo(f"tether: warning: {problem.msg} ({problem.id})", err=True)
    return executor


def check_services(broker: str | None) -> None:
    """One clear line (password hidden) and exit 1 when the database or broker is down."""
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    host = f"{db.get('HOST') or ''}" + (f":{db['PORT']}" if db.get("PORT") else "")
    where = " ".join(str(p) for p in (db["ENGINE"].rsplit(".", 1)[-1], host, db["NAME"]) if p)
    try:
        connection.ensure_connection()
    except Exception as exc:
        raise fail(
            f"cannot reach the database ({where}): {str(exc).strip().splitlines()[0]}"
        ) from None
    features = connection.features
    if features.has_select_for_update and not features.has_select_for_update_skip_locked:
        # workers claim tasks with it (MariaDB has it from 10.6 on, MySQL from 8.0)
        raise fail(
            f"the database ({where}) has no SELECT … FOR UPDATE SKIP LOCKED; Tether "
            "needs PostgreSQL, MariaDB 10.6+ or MySQL 8.0+"
        )
    if broker:
        from kombu import Connection

        try:
            with Connection(broker, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
        except Exception as exc:
            raise fail(f"cannot reach the broker at {redact(broker)}: {exc}") from None


def worker(
    queues: Annotated[
        str | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Comma-separated queues to take tasks from (default: all "
            "queues of the registered task types).",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, max=256, help="Tasks run at once (threads)."),
    ] = 4,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker for Tether tasks (needs TETHER_BROKER_URL and a shared
    TETHER_DATABASE_URL). `celery inspect` and Flower work on it."""
    setup_django()
    from django.conf import settings

    from tether import executors, registry

    executor = configured_executor()
    if executor.capabilities.in_process:
        raise fail(
            "tether worker needs TETHER_BROKER_URL (redis://… or amqp://…): the "
            f"{executor.name} executor runs tasks inside `tether serve`"
        )
    check_services(
        str(settings.TETHER["BROKER_URL"]) if executor.capabilities.needs_broker else None
    )
    executors.install(executor)
    wanted = queues.split(",") if queues else sorted({t.queue for t in registry.all_types()})
    executor.run_worker([q.strip() for q in wanted if q.strip()], concurrency, loglevel)


def migrate_cmd() -> None:
    """Create or update the database tables."""
    setup_django()
    from django.core.management import call_command

    call_command("migrate", interactive=False)


SUPERUSER_VARS = (
    "DJANGO_SUPERUSER_USERNAME",
    "DJANGO_SUPERUSER_PASSWORD",
    "DJANGO_SUPERUSER_EMAIL",
)
SUPERUSER_ENV = f"{', '.join(SUPERUSER_VARS[:2])} and {SUPERUSER_VARS[2]}"


def createsuperuser(
    noinput: Annotated[
        bool,
        typer.Option(
            "--noinput",
            "--no-input",
            help=f"Ask nothing: take the user from {SUPERUSER_ENV}.",
        ),
    ] = False,
) -> None:
    """Create an admin user for /admin/ (asks for name and password, or --noinput)."""
    if not noinput and not sys.stdin.isatty():
        # Django would print a note and exit 0 without creating anyone
        raise fail(
            "createsuperuser asks for a name and password on a terminal; without one use "
            f"`tether createsuperuser --noinput` with {SUPERUSER_ENV} set",
            2,
        )
    missing = [name for name in SUPERUSER_VARS if not os.environ.get(name)]
    if noinput and missing:  # without a password Django would make a user who cannot log in
        raise fail(f"createsuperuser --noinput needs {SUPERUSER_ENV}; {missing[0]} is not set", 2)
    setup_django()
    from django.core.management import call_command
    from django.core.management.base import CommandError

    call_command("migrate", interactive=False, verbosity=0)
    try:
        call_command("createsuperuser", interactive=not noinput)
    except CommandError as exc:  # a name taken, a password too weak: one line, exit 2
        raise fail(str(exc).removeprefix("Error: "), 2) from None


def manage(ctx: typer.Context) -> None:
    """Run a Django management command, e.g. `tether manage check --deploy`."""
    setup_django()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["tether manage", *ctx.args])


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Server")(serve)
    app.command(rich_help_panel="Server")(worker)
    app.command("migrate", rich_help_panel="Server")(migrate_cmd)
    app.command(rich_help_panel="Server")(createsuperuser)
    app.command(
        rich_help_panel="Server",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(manage)
