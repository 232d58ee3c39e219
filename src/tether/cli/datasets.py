"""Dataset commands of the ``tether`` program (no Django imports here): ``gen-csv``,
``import``, ``export``, ``download`` and ``datasets`` (list, show with a preview, rm)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from tether.cli import watch
from tether.cli.client import JSON_OPT, emit_json, when
from tether.cli.http import EXIT_USAGE, Api, ApiError, CliError, connect
from tether.cli.term import clip, console, limit_on

PANEL = "Datasets"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # importer.NAME_PATTERN
TYPES = ("integer", "float", "boolean", "date", "timestamp", "timestamptz", "text")
DATE_TYPES = ("date", "timestamp", "timestamptz")


class Mode(StrEnum):
    CREATE = "create"
    APPEND = "append"
    REPLACE = "replace"


class OnError(StrEnum):
    FAIL = "fail"
    SKIP = "skip"


SHOW_PROGRESS_BYTES = 4 * 1024 * 1024  # bars for uploads/downloads bigger than this
UPLOAD_READ_TIMEOUT = 600.0  # the server syncs the file to disk before it answers
out = console()
err = console(stderr=True)


def gen_csv(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write ('-' for standard output).")
    ],
    rows: Annotated[
        int, typer.Option("--rows", "-n", min=0, max=100_000_000, help="Data rows (plus a header).")
    ] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 42,
) -> None:
    """Write realistic dummy CSV data (9 columns; quotes, commas, newlines in text).

    Integers, floats, booleans, dates, timestamps with a zone, and text with quotes,
    commas and newlines."""
    from tether.datasets import generate

    started = time.monotonic()
    if str(output) == "-":
        generate.write(sys.stdout, rows, seed)
        return
    tmp = output.with_name(f".{output.name}.part-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out_file:
            written = generate.write(out_file, rows, seed)
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {output}: {exc.strerror or exc}", 1) from None
    size = output.stat().st_size
    typer.echo(
        f"wrote {written:,} rows ({size / 1e6:.1f} MB) to {output} in "
        f"{time.monotonic() - started:.1f}s",
        err=True,
    )


# -- helpers -------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise CliError(
            f"dataset name {name!r} is not allowed: use 1-64 letters, digits, "
            "'_' and '-', starting with a letter or digit",
            EXIT_USAGE,
        )
    return name


def parse_columns(spec: str) -> str:
    """``id:integer,name:text`` (or a JSON list of {name, type}) as the JSON the API
    takes; exit 2 when it does not parse."""
    if spec.lstrip().startswith("["):
        try:
            json.loads(spec)
        except ValueError as exc:
            raise CliError(f"--columns is not valid JSON: {exc}", EXIT_USAGE) from None
        return spec
    columns = []
    for item in spec.split(","):
        name, sep, kind = item.rpartition(":")
        if not sep or not name.strip() or kind.strip() not in TYPES:
            raise CliError(
                f"--columns: {item.strip()!r} is not NAME:TYPE with TYPE one of {', '.join(TYPES)}",
                EXIT_USAGE,
            )
        columns.append({"name": name.strip(), "type": kind.strip()})
    return json.dumps(columns)


def check_day(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise CliError(f"{option} {value!r} is not a date (YYYY-MM-DD)", EXIT_USAGE) from None


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


@contextmanager
def transfer_bar(description: str, show: bool) -> Iterator[Callable[[int, int | None], None]]:
    """A transient bytes bar on stderr (when ``show``); yields ``update(done, total)``,
    which shows the bar once the total is known to be worth one."""
    if not show:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(description),
        BarColumn(),
        TaskProgressColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bars:
        row = bars.add_task(description, total=None, visible=False)

        def update(done: int, total: int | None) -> None:
            if total and total > SHOW_PROGRESS_BYTES:
                bars.update(row, completed=done, total=total, visible=True)

        yield update


class ProgressReader:
    """A file httpx streams from (it needs read, and seek/tell or fileno for the
    length) that reports how far the upload got."""

    def __init__(self, raw: IO[bytes], report: Callable[[int], None]) -> None:
        self.raw = raw
        self.report = report
        self.sent = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sent += len(data)
        self.report(self.sent)
        return data

    def fileno(self) -> int:
        return self.raw.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        position = self.raw.seek(offset, whence)
        self.sent = position
        return position

    def tell(self) -> int:
        return self.raw.tell()


def find_dataset(api: Api, name: str) -> dict[str, Any] | None:
    try:
        return dict(api.get(f"/datasets/{name}"))
    except ApiError as exc:
        if exc.status == 404:
            return None
        if exc.status == 400:  # a name the server refuses, such as a reserved one
            raise CliError(exc.message, EXIT_USAGE) from None
        raise


def wait_final(api: Api, task_id: int) -> dict[str, Any]:
    """Poll quietly until the task is final."""
    while True:
        task = watch.patiently(lambda: api.task(task_id))
        if task["status"] in watch.FINAL:
            return task
        time.sleep(watch.POLL)


def download_to(api: Api, task_id: int, output: Path) -> int:
    """Download the export of ``task_id`` to ``output`` atomically (a temporary file in
    the same folder, renamed when complete); returns the size."""
    tmp = output.with_name(f".{output.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            with transfer_bar(f"download #{task_id}", err.is_terminal) as progress:
                size = api.download(f"/tasks/{task_id}/download", fh, progress)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(output)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return size


def check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise CliError(f"-o {output} is a directory; name a file", EXIT_USAGE)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"cannot write to {folder}/ (-o {output})", EXIT_USAGE)


def preview_cell(value: Any, width: int | None = 40) -> str:
    if value is None:
        return "∅"
    text = json.dumps(value) if isinstance(value, bool) else str(value)
    return clip(text.replace("\r", "").replace("\n", "⏎"), width)


def describe_columns(columns: list[dict[str, Any]], width: int | None = 70) -> str:
    return clip(", ".join(f"{c['name']}:{c['type']}" for c in columns), width)


# -- tether import / export / download ------------------------------------------------


def refuse_non_text(file: Path, handle: IO[bytes]) -> None:
    """Exit 2 before uploading a file the server would refuse as not text (gzip, a
    workbook, binary data, another encoding): the same check as the server's."""
    from tether.datasets.checks import SNIFF_BYTES, text_problem

    try:
        head = handle.read(SNIFF_BYTES + 1)
        handle.seek(0)
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_USAGE) from None
    problem = text_problem(head[:SNIFF_BYTES], whole=len(head) <= SNIFF_BYTES)
    if problem is not None:
        raise CliError(f"{file} is not UTF-8 CSV text: {problem}", EXIT_USAGE)


def import_cmd(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(metavar="FILE", help="The CSV file (UTF-8).", show_default=False)
    ],
    dataset: Annotated[
        str, typer.Option("--dataset", "-d", help="Dataset name.", show_default=False)
    ],
    mode: Annotated[
        Mode, typer.Option(help="create (must not exist), append (same columns) or replace.")
    ] = Mode.CREATE,
    delimiter: Annotated[str, typer.Option(help="Field delimiter ('tab' for a tab).")] = ",",
    no_header: Annotated[
        bool,
        typer.Option(
            "--no-header", help="The first line is data; columns are column_1, column_2, …"
        ),
    ] = False,
    null_values: Annotated[
        str | None,
        typer.Option(
            "--null-values",
            help="Cells read as null, comma-separated (default: '', NA, NULL); "
            "a JSON list also works.",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="Declare the columns instead of inferring them: NAME:TYPE,… (types: "
            + ", ".join(TYPES)
            + ")."
        ),
    ] = None,
    on_error: Annotated[
        OnError,
        typer.Option(
            "--on-error", help="fail: a bad row fails the import; skip: skip and report it."
        ),
    ] = OnError.FAIL,
    watch_it: Annotated[bool, typer.Option("--watch", help="Watch it until it ends.")] = False,
    as_json: JSON_OPT = False,
) -> None:
    """Upload a CSV file and import it into a dataset; prints the import task's id."""
    check_name(dataset)
    form: dict[str, Any] = {
        "dataset": dataset,
        "mode": mode.value,
        "delimiter": delimiter,
        "header": "false" if no_header else "true",
        "on_error": on_error.value,
    }
    if null_values is not None:
        form["null_values"] = null_values
    if columns is not None:
        form["columns"] = parse_columns(columns)
    try:
        handle = open(file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}", EXIT_USAGE) from None
    try:
        refuse_non_text(file, handle)
    except CliError:
        handle.close()
        raise
    with handle, connect(ctx) as api:
        size = os.fstat(handle.fileno()).st_size
        existing = find_dataset(api, dataset)
        if mode is Mode.CREATE and existing is not None:
            raise CliError(
                f"dataset {dataset!r} exists already; use --mode append or "
                "--mode replace, or another name"
            )
        if mode is Mode.APPEND and existing is None:
            raise CliError(f"no dataset {dataset!r} to append to; use --mode create")
        started = time.monotonic()
        try:
            with transfer_bar(f"upload {file.name}", err.is_terminal and not as_json) as bar:
                reader = ProgressReader(handle, lambda sent: bar(sent, size))
                task = api.post(
                    "/datasets/import",
                    data=form,
                    files={"file": (file.name, reader, "text/csv")},
                    timeout=UPLOAD_READ_TIMEOUT,
                )
        except KeyboardInterrupt:
            err.print("upload interrupted: nothing was imported")
            raise typer.Exit(130) from None
        task_id = int(task["id"])
        if as_json and not watch_it:
            emit_json(task)
            return
        if not as_json:
            err.print(
                f"uploaded {file.name} ({human_size(size)}) in "
                f"{time.monotonic() - started:.1f}s; task {task_id} imports it into "
                f"dataset {dataset!r}",
                style="dim",
            )
            out.print(task_id)
        if watch_it:
            sys.stdout.flush()
            raise typer.Exit(watch.run_watch(api, [task_id], as_json=as_json))


def export_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write.", show_default=False)
    ],
    from_date: Annotated[
        str | None, typer.Option("--from", metavar="DATE", help="First day included (YYYY-MM-DD).")
    ] = None,
    to_date: Annotated[
        str | None, typer.Option("--to", metavar="DATE", help="Last day included (YYYY-MM-DD).")
    ] = None,
    date_column: Annotated[
        str | None,
        typer.Option(
            "--date-column",
            help="Date/timestamp column for --from/--to (default: the dataset's only one).",
        ),
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(help="Columns to export, comma-separated, in this order (default: all)."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Keep cells that look like spreadsheet formulas as they are "
            "(default: prefix them with ').",
        ),
    ] = False,
    watch_it: Annotated[bool, typer.Option("--watch", help="Show progress bars.")] = False,
    as_json: JSON_OPT = False,
) -> None:
    """Export a dataset (or a date range) to a CSV file: waits, then downloads it."""
    check_name(name)
    start, end = check_day(from_date, "--from"), check_day(to_date, "--to")
    if start and end and start > end:
        raise CliError(f"--from {start} is after --to {end}", EXIT_USAGE)
    check_writable(output)
    body: dict[str, Any] = {"raw": raw}
    if columns:
        body["columns"] = [c.strip() for c in columns.split(",") if c.strip()]
    if start:
        body["from_date"] = start
    if end:
        body["to_date"] = end
    with connect(ctx) as api:
        if (start or end) and not date_column:
            date_column = guess_date_column(api, name)
        if date_column:
            body["date_column"] = date_column
        task = api.post(f"/datasets/{name}/export", json=body)
        task_id = int(task["id"])
        if not as_json:
            out.print(task_id)
        sys.stdout.flush()
        try:
            if watch_it and not as_json:
                code = watch.run_watch(api, [task_id])
                if code == 130:
                    raise KeyboardInterrupt
                task = api.task(task_id)
            else:
                task = wait_final(api, task_id)
        except KeyboardInterrupt:
            err.print(
                f"stopped waiting; export task {task_id} keeps running (`tether "
                f"download {task_id} -o {output}` fetches its file)"
            )
            raise typer.Exit(130) from None
        if task["status"] != "succeeded":
            raise CliError(watch.final_line(task_id, task))
        size = download_to(api, task_id, output)
    if as_json:
        emit_json(task)
        return
    rows = (task.get("result") or {}).get("rows")
    err.print(
        f"wrote {rows:,} row{'' if rows == 1 else 's'} ({human_size(size)}) to {output}"
        if isinstance(rows, int)
        else f"wrote {human_size(size)} to {output}"
    )


def guess_date_column(api: Api, name: str) -> str:
    ds = find_dataset(api, name)
    if ds is None:
        raise CliError(f"no dataset {name!r}")
    candidates = [c["name"] for c in ds.get("columns") or [] if c.get("type") in DATE_TYPES]
    if len(candidates) != 1:
        which = ", ".join(candidates) if candidates else "none"
        raise CliError(
            f"--from/--to need --date-column (date or timestamp columns of {name!r}: {which})",
            EXIT_USAGE,
        )
    return str(candidates[0])


def download_cmd(
    ctx: typer.Context,
    task_id: Annotated[int, typer.Argument(metavar="ID", help="A csv_export task id.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="File to write.", show_default=False)
    ],
) -> None:
    """Download the CSV file of a succeeded export task."""
    check_writable(output)
    with connect(ctx) as api:
        size = download_to(api, task_id, output)
    err.print(f"wrote {human_size(size)} to {output}")


# -- tether datasets [NAME] / datasets rm NAME ----------------------------------------


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
        data = api.get("/datasets")
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
        page = (
            api.get(f"/datasets/{name}/rows", params={"limit": rows, "offset": offset})
            if rows
            else None
        )
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
                api.delete(f"/datasets/{name}")
            except ApiError as exc:
                if exc.status == 401:
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
