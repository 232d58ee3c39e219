"""How the client formats values (pure functions): cut with … only on a terminal,
params of a task type described by their choices, help labels of Typer parameters."""

from __future__ import annotations

import typer

from tether.cli import datasets as d
from tether.cli import tidy
from tether.cli.main import app
from tether.cli.params import describe_params, param_kind
from tether.cli.term import clip


def test_clip_cuts_only_with_a_limit() -> None:
    long = "x" * 100
    assert clip(long, 10) == "x" * 9 + "…"
    assert clip(long, None) == long  # off a terminal: whole
    assert clip("short", 10) == "short"
    assert d.preview_cell("a\nb" + "y" * 60, None) == "a⏎b" + "y" * 60
    assert d.preview_cell("y" * 60) == "y" * 39 + "…"
    columns = [{"name": f"column_{i}", "type": "integer"} for i in range(10)]
    assert "…" not in d.describe_columns(columns, None)
    assert d.describe_columns(columns).endswith("…")


def test_params_show_their_choices_not_any() -> None:
    assert param_kind({"enum": ["create", "append", "replace"]}) == "{create,append,replace}"
    assert param_kind({"enum": [1, None]}) == "{1,null}"
    assert param_kind({"type": ["integer", "null"]}) == "integer|null"
    assert param_kind({"anyOf": [{"type": "string"}, {"const": 0}]}) == "string|{0}"
    assert param_kind({}) == "any"  # a param the schema leaves open
    schema = {
        "properties": {"mode": {"enum": ["create", "append"], "default": "create"}, "n": {}},
        "required": ["n"],
    }
    assert describe_params(schema) == 'mode:{create,append}="create", n:any*'


def test_help_labels() -> None:
    root = tidy.prepare(typer.main.get_command(app))
    importer = root.commands["import"]
    options = {p.name: p for p in importer.params}
    assert options["mode"].metavar == "{create,append,replace}"
    assert options["watch_it"].metavar == ""  # a flag takes no value
    assert "--server" in [o for p in importer.params for o in p.opts]
    submit = {p.name: p for p in root.commands["submit"].params}
    assert submit["param"].metavar == "<str>"  # one value per -p, repeatable
    pause = root.commands["pause"].params[0]
    assert pause.get_usage_pieces(None) == ["ID..."]
    assert pause.display_type_rich(None) == "<int>"
    assert "--server" not in [o for p in root.commands["serve"].params for o in p.opts]
    assert "--server" not in [o for p in root.commands["gen-csv"].params for o in p.opts]
