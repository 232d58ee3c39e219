"""How the client formats values (pure functions): cut with … only on a terminal,
``ls`` rows one line each on a terminal, params of a task type described by their
choices, help labels of Typer parameters."""

from __future__ import annotations

import io

import typer
from rich.cells import cell_len
from rich.console import Console

from tether.cli import client, tidy
from tether.cli import datasets as d
from tether.cli.main import app
from tether.cli.params import describe_params, param_kind
from tether.cli.term import UNWRAPPED, clip, fit_widths


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


LONG_ERROR = "DataError: line 2: " + "'xxxx' is not an integer; " * 8


def ls_lines(width: int, terminal: bool) -> list[str]:
    tasks = [
        {"id": 7, "type": "csv_import", "status": "failed", "error": LONG_ERROR},
        {"id": 8, "type": "add", "status": "running", "progress": {"percent": 5, "message": "ok"}},
        {"id": 1234, "type": "render", "status": "queued"},
    ]
    for task in tasks:
        task["created_at"] = "2026-12-01T15:58:53Z"
    buf = io.StringIO()
    con = Console(file=buf, width=width, force_terminal=terminal, color_system=None)
    con.print(client.task_table(tasks, con))
    return buf.getvalue().splitlines()


def test_ls_rows_are_one_line_each_on_a_terminal() -> None:
    for width in (50, 80, 120, 200):
        lines = ls_lines(width, terminal=True)
        rows = [line for line in lines if line.startswith("│")]
        assert len(rows) == 3 and len(lines) == 7, lines  # rules, header, a line per task
        assert all(cell_len(line) <= width for line in lines), lines
        if width < 80:  # too narrow for the other columns: every column is cut a little
            continue
        assert rows[0].endswith("… │") and "│ DataError:" in rows[0], lines
        assert "│ 2026-12-01 15:58:53 │" in rows[0], lines  # the message gives way first
        assert "│ 1234 │ render " in rows[2] and rows[1].rstrip(" │").endswith("ok"), lines
    whole = "\n".join(ls_lines(UNWRAPPED, terminal=False))
    assert LONG_ERROR.strip() in whole and "…" not in whole
    assert fit_widths([4, 10, 20], 40) == [4, 10, 20]
    assert fit_widths([4, 10, 200], 40) == [4, 10, 26]  # the last column gives way
    assert fit_widths([4, 30, 30, 200], 40) == [4, 12, 12, 12]  # the key stays whole


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
