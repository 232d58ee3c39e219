"""``tether datasets`` (list, show with a preview, rm), and the registration of every
dataset command (no Django imports here; ``import``, ``export``, ``download`` and
``gen-csv`` are in ``dataset_transfer``)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from tether.cli.client import JSON_OPT, emit_json, when
from tether.cli.connection import EXIT_USAGE, CliError, connect
from tether.cli.dataset_common import check_name, err, find_dataset, out
from tether.cli.dataset_transfer import download_cmd, export_cmd, gen_csv, import_cmd
from tether.cli.term import clip, limit_on
from tether.client import ApiError, Unauthorized

PANEL = "Datasets"


def preview_cell(value: Any, width: int | None = 40) -> str:
    if value is None:
        return "∅"
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return clip(text.replace("\r", "").replace("\n", "⏎"), width)


def describe_columns(columns: list[dict[str, Any]], width: int | None = 70) -> str:
    return clip(", ".join(f"{c['name']}:{c['type']}" for c in columns), width)


class DatasetsGroup(TyperGroup):
    """``tether datasets NAME`` is short for ``tether datasets show NAME``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().resolve_command(ctx, args)


datasets_app = typer.Typer(
    cls=DatasetsGroup,
    invoke_without_command=True,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@datasets_app.callback()
def datasets_list(ctx: typer.Context, as_json: JSON_OPT = False) -> None:
    """List your datasets; `datasets NAME` shows one and its rows, `datasets rm NAME`."""
    if ctx.invoked_subcommand is not None:
        return
    with connect(ctx) as api:
        data = api.datasets()
    if as_json:
        emit_json(data)
        return
    if not data:
        out.print("no datasets yet; import one with `tether import FILE --dataset NAME`")
        return
    table = Table("name", "rows", "columns", "last import")
    for ds in data:
        last = when(ds.get("last_import_at"))
        if ds.get("last_import_task"):
            last += f" (task {ds['last_import_task']})"
        table.add_row(
            ds["name"],
            f"{ds['row_count']:,}",
            describe_columns(ds["columns"], limit_on(out, 70)),
            last,
        )
    out.print(table)


@datasets_app.command("show")
def datasets_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.")],
    rows: Annotated[
        int, typer.Option("--rows", "-n", min=0, max=1000, help="Preview this many rows (0: none).")
    ] = 10,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many rows first.")] = 0,
    as_json: JSON_OPT = False,
) -> None:
    """One dataset: columns with types, row count, last import, and its first rows."""
    check_name(name)
    with connect(ctx) as api:
        ds = find_dataset(api, name)
        if ds is None:
            raise CliError(f"no dataset {name!r}")
        page = api.dataset_rows(name, limit=rows, offset=offset) if rows else None
    if as_json:
        emit_json({**ds, "preview": page["rows"] if page else []})
        return
    last = when(ds.get("last_import_at"))
    if ds.get("last_import_task"):
        last += f" (task {ds['last_import_task']})"
    for key, value in (
        ("name", ds["name"]),
        ("rows", f"{ds['row_count']:,}"),
        ("created", when(ds.get("created_at"))),
        ("last import", last),
        ("columns", describe_columns(ds["columns"], width=None)),
    ):
        out.print(f"[bold]{key + ':':<13}[/bold] {value}", soft_wrap=True)
    if page and page["rows"]:
        table = Table(
            *(c["name"] for c in ds["columns"]),
            title=f"rows {offset + 1}-{offset + len(page['rows'])} of {ds['row_count']:,}",
        )
        for row in page["rows"]:
            table.add_row(*(preview_cell(v, limit_on(out, 40)) for v in row))
        out.print(table)


@datasets_app.command("rm")
def datasets_rm(
    ctx: typer.Context,
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Dataset names.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete datasets and their tables (not while an import or export of one runs)."""
    for name in names:
        check_name(name)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError("deleting datasets needs --yes when not on a terminal", EXIT_USAGE)
        typer.confirm(
            f"Delete {', '.join(names)} and all {'their' if len(names) > 1 else 'its'} rows?",
            abort=True,
        )
    failed = False
    with connect(ctx) as api:
        for name in names:
            try:
                api.delete_dataset(name)
            except ApiError as exc:
                if isinstance(exc, Unauthorized):
                    raise
                failed = True
                err.print(f"dataset {name}: {exc.message}")
                continue
            out.print(f"dataset {name}: deleted")
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("gen-csv", rich_help_panel=PANEL)(gen_csv)
    app.command("import", rich_help_panel=PANEL)(import_cmd)
    app.command("export", rich_help_panel=PANEL)(export_cmd)
    app.command("download", rich_help_panel=PANEL)(download_cmd)
    app.add_typer(datasets_app, name="datasets", rich_help_panel=PANEL)
