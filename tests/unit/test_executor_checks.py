"""The configured executor is built in one place and checked as a Django system check
(``tether manage check``; ``tether serve`` and ``tether worker`` refuse its errors)."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from tether import executors
from tether.executors.embedded import EmbeddedExecutor


@pytest.fixture
def configure(settings: Any) -> Iterator[Any]:
    """Set TETHER_* values: ``configure(EXECUTOR="celery", BROKER_URL="")``."""

    def set_tether(**values: Any) -> None:
        settings.TETHER = {**settings.TETHER, **values}

    yield set_tether
    executors.install(None)


def check_output() -> str:
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_the_default_configuration_passes() -> None:
    assert "no issues" in check_output()


def test_celery_without_a_broker_is_an_error(configure: Any) -> None:
    configure(EXECUTOR="celery", BROKER_URL="")
    with pytest.raises(SystemCheckError) as raised:
        check_output()
    assert "tether.E002" in str(raised.value)
    assert "TETHER_EXECUTOR=celery needs TETHER_BROKER_URL" in str(raised.value)


def test_an_unknown_executor_is_an_error(configure: Any) -> None:
    configure(EXECUTOR="threads")
    with pytest.raises(SystemCheckError) as raised:
        check_output()
    assert "tether.E001" in str(raised.value)
    assert "TETHER_EXECUTOR is 'threads'; use 'embedded' or 'celery'" in str(raised.value)


def test_a_broker_url_no_transport_knows_is_an_error(configure: Any) -> None:
    configure(EXECUTOR="celery", BROKER_URL="http://user:s3cret@queue.example/")
    with pytest.raises(SystemCheckError) as raised:
        check_output()
    assert "tether.E003" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_celery_on_sqlite_is_a_warning_only(configure: Any) -> None:
    configure(EXECUTOR="celery", BROKER_URL="redis://127.0.0.1:6379/0")
    assert "tether.W001" in check_output()  # no SystemCheckError: only a warning


def test_one_executor_per_process_built_from_the_settings(configure: Any) -> None:
    configure(EXECUTOR="embedded")
    first = executors.current()
    assert isinstance(first, EmbeddedExecutor) and executors.current() is first
    configure(EXECUTOR="celery", BROKER_URL="redis://127.0.0.1:6379/0")
    celery = executors.current()  # new settings: built again
    assert celery.name == "celery" and celery.capabilities.needs_broker
    assert not celery.capabilities.in_process and celery.capabilities.remote_events
    mine = EmbeddedExecutor(3)
    assert executors.install(mine) is mine and executors.current() is mine


def test_options_go_to_the_kind_that_uses_them(configure: Any) -> None:
    configure(EXECUTOR="embedded")
    assert executors.build(workers=3).slots == 3
    configure(EXECUTOR="celery", BROKER_URL="redis://127.0.0.1:6379/0")
    assert executors.build(workers=3).slots == 0  # tasks run in `tether worker`
