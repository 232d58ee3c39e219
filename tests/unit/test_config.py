from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tether.server.config import database, env_bytes, env_count


def db_for(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.setenv("TETHER_DATABASE_URL", url)
    return database(tmp_path)


def test_mysql_runs_on_pymysql(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    db = db_for("mysql://root:secret@127.0.0.1:3306/tether", monkeypatch, tmp_path)
    assert db["ENGINE"] == "django.db.backends.mysql" and db["NAME"] == "tether"
    assert sys.modules["MySQLdb"].__name__ == "pymysql"
    # Django's mysql backend refuses mysqlclient older than 1.4.3
    assert sys.modules["MySQLdb"].version_info >= (1, 4, 3)
    options = db["OPTIONS"]
    assert options["charset"] == "utf8mb4"
    assert options["isolation_level"] == "read committed"
    assert "STRICT_TRANS_TABLES" in options["init_command"]
    assert "time_zone='+00:00'" in options["init_command"]
    assert options["ssl_disabled"] is True  # loopback: no per-connection TLS setup
    assert db["TEST"] == {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}


def test_mysql_remote_keeps_tls_and_url_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remote = db_for("mysql://u:p@db.example:3306/t?connect_timeout=5", monkeypatch, tmp_path)
    assert "ssl_disabled" not in remote["OPTIONS"]
    assert remote["OPTIONS"]["connect_timeout"] == 5
    local_tls = db_for("mysql://u:p@localhost/t?ssl-ca=/etc/ca.pem", monkeypatch, tmp_path)
    assert local_tls["OPTIONS"]["ssl"] == {"ca": "/etc/ca.pem"}
    assert "ssl_disabled" not in local_tls["OPTIONS"]


def test_sqlite_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TETHER_DATABASE_URL", raising=False)
    db = database(tmp_path)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "tether.sqlite3")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, 123),
        ("", 123),
        ("1048576", 1048576),
        ("512M", 512 * 1024**2),
        ("2G", 2 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1.5k", 1536),
        ("10 MB", 10 * 1024**2),
    ],
)
def test_env_bytes(monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: int) -> None:
    if raw is None:
        monkeypatch.delenv("TETHER_MAX_UPLOAD_BYTES", raising=False)
    else:
        monkeypatch.setenv("TETHER_MAX_UPLOAD_BYTES", raw)
    assert env_bytes("TETHER_MAX_UPLOAD_BYTES", 123) == expected


@pytest.mark.parametrize("raw", ["lots", "2X", "-1", "G"])
def test_env_bytes_refuses_nonsense(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("TETHER_MAX_UPLOAD_BYTES", raw)
    with pytest.raises(ValueError, match="TETHER_MAX_UPLOAD_BYTES"):
        env_bytes("TETHER_MAX_UPLOAD_BYTES", 123)


@pytest.mark.parametrize("raw", ["abc", "1.5", "10k", "0", "-5"])
def test_env_count_refuses_what_is_not_a_count(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("TETHER_EVENT_QUEUE_LIMIT", raw)
    with pytest.raises(ValueError, match=r"TETHER_EVENT_QUEUE_LIMIT=.* whole number from 1"):
        env_count("TETHER_EVENT_QUEUE_LIMIT", 10_000)


def test_env_count(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_count("TETHER_EVENT_QUEUE_LIMIT", 7) == 7
    monkeypatch.setenv("TETHER_EVENT_QUEUE_LIMIT", " 50 ")
    assert env_count("TETHER_EVENT_QUEUE_LIMIT", 7) == 50
