"""`tether serve` / `tether worker` refuse to start, with one clear line, when the
database cannot be used."""

from __future__ import annotations

import pytest
import typer
from django.conf import settings
from django.db import connection

from tether.cli.server import check_services
from tether.redaction import redact


def test_unreachable_database_is_one_line_with_host_and_port(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = settings.DATABASES["default"]
    for key, value in {
        "ENGINE": "django.db.backends.mysql",
        "HOST": "127.0.0.1",
        "PORT": 3399,
        "NAME": "tether",
        "PASSWORD": "s3cret",
    }.items():
        monkeypatch.setitem(db, key, value)

    def refuse() -> None:
        raise OSError(
            "(2003, \"Can't connect to MySQL server on '127.0.0.1' "
            '([Errno 111] Connection refused)")\nsecond line'
        )

    monkeypatch.setattr(connection, "ensure_connection", refuse)
    with pytest.raises(typer.Exit) as exit_info:
        check_services(None)
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "s3cret" not in err
    assert err.startswith(
        "tether: cannot reach the database (mysql 127.0.0.1:3399 tether): (2003, "
    )


def test_database_without_skip_locked_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(connection, "ensure_connection", lambda: None)
    # cached properties that ask the server on MySQL: set them on the instance
    monkeypatch.setattr(connection.features, "has_select_for_update", True)
    monkeypatch.setattr(
        connection.features, "has_select_for_update_skip_locked", False, raising=False
    )
    with pytest.raises(typer.Exit):
        check_services(None)
    assert "MariaDB 10.6+" in capsys.readouterr().err


def test_redact_hides_the_password() -> None:
    assert (
        redact("mysql://root:s3cret@db.example:3306/tether")
        == "mysql://root:***@db.example:3306/tether"
    )
    assert redact("mysql://root@127.0.0.1:3306/tether") == "mysql://root@127.0.0.1:3306/tether"
