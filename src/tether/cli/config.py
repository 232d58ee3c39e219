"""The client's per-user config file: ``$XDG_CONFIG_HOME/tether/config.json`` (0600).

Holds ``{"server": url, "token": token, "username": name}``. The server comes from
``--server``, then ``TETHER_SERVER``, then the file, then the default; the token from
``TETHER_TOKEN``, else the file's token when the file's server is the one in use (a token
is never sent to a server it was not issued by).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SERVER = "http://127.0.0.1:8000"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether"


def config_path() -> Path:
    return config_dir() / "config.json"


def load() -> dict[str, Any]:
    """The stored config, or ``{}`` when there is none (or it is unreadable)."""
    try:
        data = json.loads(config_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(data: dict[str, Any]) -> Path:
    """Write the config atomically: directory 0700, file 0600."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = config_path()
    tmp = path.with_name(f".config.json.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def normalize(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url


@dataclass(frozen=True)
class Settings:
    server: str
    token: str | None
    username: str | None
    token_from_env: bool = False  # the token is TETHER_TOKEN's, not the stored one


def resolve(server_option: str | None) -> Settings:
    stored = load()
    stored_server = normalize(str(stored["server"])) if stored.get("server") else None
    server = normalize(
        server_option or os.environ.get("TETHER_SERVER") or stored_server or DEFAULT_SERVER
    )
    env_token = os.environ.get("TETHER_TOKEN") or None
    token, username = env_token, None
    if stored_server in (None, server):
        token = token or stored.get("token") or None
        username = stored.get("username") or None
    return Settings(server, token, username, token_from_env=env_token is not None)
