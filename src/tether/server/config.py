"""Where Tether keeps its state and how it is configured (environment variables)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def home() -> Path:
    """State directory: ``$TETHER_HOME`` or ``./.tether``."""
    path = Path(os.environ.get("TETHER_HOME") or ".tether").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


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

    db: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=600,
                                                   conn_health_checks=True))
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                            "PRAGMA busy_timeout=30000;",
        }
        db["TEST"] = {"NAME": str(home_dir / "test.sqlite3")}
    return db
