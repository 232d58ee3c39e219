"""Where Tether keeps its state and how it is configured (environment variables)."""

from __future__ import annotations

import os
import secrets
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def env_bytes(name: str, default: int) -> int:
    """A size in bytes from the environment: ``1048576``, ``512M``, ``2G`` (binary units;
    an optional trailing ``B``/``iB`` is ignored)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    text = raw.upper().removesuffix("IB").removesuffix("B").strip()
    unit = text[-1] if text and text[-1] in UNITS else ""
    number = text[: len(text) - len(unit)].strip()
    try:
        value = float(number) * UNITS[unit]
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a size (e.g. 2147483648, 512M, 2G)") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must not be negative")
    return int(value)


def env_count(name: str, default: int, *, least: int = 1) -> int:
    """A whole number of at least ``least`` from the environment."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < least:
        raise ValueError(f"{name}={raw!r} must be a whole number from {least}")
    return int(raw)


def private_umask() -> None:
    """Files and directories this process creates from now on are its user's alone
    (0600, 0700): the database and its WAL, uploads, exports, renders, keys."""
    os.umask(0o077)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (0700), created if missing: a
    directory of Tether's own (uploads/, exports/, renders/)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _take_away_group_and_other(path, 0o700)
    return path


def user_dir(path: Path) -> Path:
    """A directory the user points Tether at (TETHER_HOME, TETHER_DATA_DIR): created
    0700 when missing, but an existing one keeps its mode (a sticky /tmp-like or shared
    directory stays as it is; what Tether writes in it is private all the same)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if path.is_dir():
            return path
        raise
    _take_away_group_and_other(path, 0o700)  # (created now, whatever the umask)
    return path


def private_file(path: Path) -> None:
    """``path`` readable by its owner only: created empty (0600) when missing, access
    for group and others removed when it exists."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        _take_away_group_and_other(path, 0o600)


def _take_away_group_and_other(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(mode)
    except FileNotFoundError:
        pass
    except PermissionError:
        pass  # another user's: nothing this process may change


def home() -> Path:
    """State directory: ``$TETHER_HOME`` or ``./.tether`` (0700 when Tether creates it)."""
    return user_dir(Path(os.environ.get("TETHER_HOME") or ".tether").expanduser().resolve())


def secret_key(home_dir: Path) -> str:
    """``$TETHER_SECRET_KEY``, or a random key kept in ``$TETHER_HOME/secret_key`` (0600)."""
    if os.environ.get("TETHER_SECRET_KEY"):
        return os.environ["TETHER_SECRET_KEY"]
    path = home_dir / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def database(home_dir: Path) -> dict[str, Any]:
    """``$TETHER_DATABASE_URL`` (sqlite, postgres, mysql) or SQLite in TETHER_HOME."""
    url = os.environ.get("TETHER_DATABASE_URL") or f"sqlite:///{home_dir / 'tether.sqlite3'}"
    import dj_database_url

    db: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True))
    if db["ENGINE"] == "django.db.backends.sqlite3":
        _private_sqlite(str(db["NAME"]))
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
            "PRAGMA busy_timeout=30000;",
        }
        db["TEST"] = {"NAME": str(home_dir / "test.sqlite3")}
    elif db["ENGINE"] == "django.db.backends.mysql":
        _use_pymysql()
        from_url = db.get("OPTIONS", {})  # e.g. ?ssl-ca=/path/ca.pem (verified TLS)
        db["OPTIONS"] = {
            "charset": "utf8mb4",
            # As on PostgreSQL: each statement sees the latest committed rows, and a
            # SELECT … FOR UPDATE SKIP LOCKED claim locks only the rows it returns
            # (REPEATABLE READ would also take gap locks and deadlock concurrent claims).
            "isolation_level": "read committed",
            # Errors instead of silently truncated or coerced values; UTC for NOW().
            "init_command": "SET sql_mode='STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,"
            "NO_ENGINE_SUBSTITUTION', time_zone='+00:00'",
        }
        if _is_local(str(db.get("HOST") or "")) and not any(k.startswith("ssl") for k in from_url):
            # PyMySQL otherwise tries (unverified) TLS whenever the server offers it and
            # loads the system CA store for every new connection: 25-50 ms per
            # connection, that is per task run. Nothing to protect on loopback.
            db["OPTIONS"]["ssl_disabled"] = True
        db["OPTIONS"].update(from_url)
        db["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    return db


def _private_sqlite(name: str) -> None:
    """SQLite creates its WAL and shared-memory files with the database file's mode, so
    a database file created 0600 keeps all three private."""
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    if not path.parent.is_dir():
        return  # Django reports it when it connects
    private_file(path)
    for suffix in ("-wal", "-shm", "-journal"):
        _take_away_group_and_other(path.with_name(path.name + suffix), 0o600)


def _is_local(host: str) -> bool:
    """A Unix socket or a loopback address (what MySQL clients treat as local)."""
    return host in ("", "localhost", "::1") or host.startswith(("/", "127."))


def _use_pymysql() -> None:
    """Let Django's mysql backend, written for mysqlclient (``MySQLdb``, a C extension that
    needs MySQL headers to build), run on PyMySQL (pure Python). PyMySQL reports a
    mysqlclient-compatible version (PyMySQL 1.2: 2.2.x) that passes Django's check."""
    import pymysql

    pymysql.install_as_MySQLdb()


def env_networks(name: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated addresses or CIDRs (``10.0.0.5, 10.1.0.0/16, ::1``)."""
    raw = os.environ.get(name, "")
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"{name}: {part!r} is not an IP address or network (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)


def env_origins(name: str) -> tuple[str, ...]:
    """Comma-separated web origins (``https://dash.example.com, http://localhost:3000``),
    each as a browser sends it in the ``Origin`` header: scheme, host and any port."""
    origins = []
    for part in (p.strip() for p in os.environ.get(name, "").split(",")):
        if not part:
            continue
        scheme, sep, rest = part.rstrip("/").partition("://")
        if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
            raise ValueError(
                f"{name}: {part!r} is not an origin (scheme://host[:port], e.g. "
                "https://dash.example.com)"
            )
        origins.append(f"{scheme.lower()}://{rest.lower()}")
    return tuple(origins)
