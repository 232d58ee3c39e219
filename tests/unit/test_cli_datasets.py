"""The dataset commands' argument handling (pure functions) and the client's promise not
to import Django."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tether.cli import dataset_transfer as t
from tether.cli import datasets as d
from tether.cli.connection import EXIT_USAGE, CliError
from tether.cli.dataset_common import check_name


def test_columns_shorthand_becomes_the_api_json() -> None:
    assert json.loads(t.parse_columns("id:integer, name : text,at:timestamptz")) == [
        {"name": "id", "type": "integer"},
        {"name": "name", "type": "text"},
        {"name": "at", "type": "timestamptz"},
    ]
    spec = '[{"name": "a", "type": "date"}]'
    assert t.parse_columns(spec) == spec  # JSON is passed on (the server checks it)


@pytest.mark.parametrize("spec", ["id", "id:money", ":integer", "a:integer,", "[{"])
def test_bad_columns_are_usage_errors(spec: str) -> None:
    with pytest.raises(CliError) as caught:
        t.parse_columns(spec)
    assert caught.value.code == EXIT_USAGE


def test_dates_and_names() -> None:
    assert t.check_day("2024-02-29", "--from") == "2024-02-29"
    assert t.check_day(None, "--to") is None
    for bad in ("2023-02-29", "yesterday", "01/02/2024"):
        with pytest.raises(CliError, match="--from"):
            t.check_day(bad, "--from")
    assert check_name("orders_2024-q1") == "orders_2024-q1"
    for bad in ("", "../x", "a b", "-x", "x" * 65, "a;b"):
        with pytest.raises(CliError):
            check_name(bad)


def test_preview_cells_fit_on_a_line() -> None:
    assert d.preview_cell(None) == "∅"
    assert d.preview_cell(True) == "true"
    assert d.preview_cell("one\r\ntwo") == "one⏎two"
    assert len(d.preview_cell("x" * 100)) == 40


def test_the_client_does_not_import_django() -> None:
    code = (
        "import sys, tether.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'drf_spectacular')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
