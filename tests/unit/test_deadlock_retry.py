"""A status change whose own transaction lost a deadlock runs again; other errors, and
deadlocks inside a caller's transaction, are raised."""

from __future__ import annotations

import psycopg
import pymysql
import pytest
from django.db import OperationalError

from tether import transitions


def wrapped(cause: BaseException) -> OperationalError:
    exc = OperationalError(str(cause))
    exc.__cause__ = cause
    return exc


def test_deadlocks_are_told_apart_from_other_errors() -> None:
    assert transitions.deadlocked(wrapped(psycopg.errors.DeadlockDetected("deadlock")))
    assert transitions.deadlocked(wrapped(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert not transitions.deadlocked(wrapped(pymysql.err.OperationalError(2013, "Lost")))
    assert not transitions.deadlocked(wrapped(psycopg.errors.SerializationFailure("x")))
    assert not transitions.deadlocked(OperationalError("no cause"))


def test_a_deadlock_victim_runs_again_and_other_errors_do_not() -> None:
    calls: list[int] = []

    @transitions.retried_on_deadlock
    def change(fail_times: int, error: BaseException) -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise wrapped(error)
        return "done"

    assert change(2, pymysql.err.OperationalError(1213, "Deadlock found")) == "done"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(OperationalError):
        change(5, psycopg.errors.DeadlockDetected("deadlock"))  # gives up after 3
    assert len(calls) == transitions.DEADLOCK_RETRIES
    calls.clear()
    with pytest.raises(OperationalError):
        change(1, pymysql.err.OperationalError(2013, "Lost connection"))
    assert len(calls) == 1
