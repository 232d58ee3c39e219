"""``tether import``, ``export``, ``download`` and ``gen-csv``: CSV files to and from
datasets (no Django imports here). Uploads and downloads stream, with a progress bar
on a terminal; a download is written atomically."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from tether.cli import watch
from tether.cli.client import JSON_OPT, emit_json
from tether.cli.connection import EXIT_USAGE, CliError, connect
from tether.cli.dataset_common import (
    TYPES,
    ProgressReader,
    check_name,
    err,
    find_dataset,
    human_size,
    out,
    transfer_bar,
)
from tether.client import BadRequest, Client

DATE_TYPES = ("date", "timestamp", "timestamptz")
UPLOAD_READ_TIMEOUT = 600.0  # the server syncs the file to disk before it answers


class Mode(StrEnum):
    CREATE = "create"
    APPEND = "append"
    REPLACE = "replace"


class OnError(StrEnum):
    FAIL = "fail"
    SKIP = "skip"


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


# -- checks of the arguments --------------------------------------------------------


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


def check_writable(output: Path) -> None:
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise CliError(f"-o {output} is a directory; name a file", EXIT_USAGE)
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CliError(f"cannot write to {folder}/ (-o {output})", EXIT_USAGE)


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


# -- the commands ------------------------------------------------------------------


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
                task = api.import_csv(
                    reader, dataset, filename=file.name, timeout=UPLOAD_READ_TIMEOUT, **form
                )
        except BadRequest as exc:  # the form or the file is not acceptable: bad input
            raise CliError(exc.message, EXIT_USAGE) from None
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
        task = api.export(name, **body)
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


def guess_date_column(api: Client, name: str) -> str:
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


def wait_final(api: Client, task_id: int) -> dict[str, Any]:
    """Wait quietly until the task is final (saying only when the server is lost or
    has no event stream)."""
    return api.wait(
        task_id,
        poll_interval=watch.POLL,
        notify=watch.Voice().notify,
        retry_for=watch.RECONNECT_SECONDS,
    )


def download_to(api: Client, task_id: int, output: Path) -> int:
    """Download the export of ``task_id`` to ``output`` atomically (a temporary file in
    the same folder, renamed when complete); returns the size."""
    tmp = output.with_name(f".{output.name}.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            with transfer_bar(f"download #{task_id}", err.is_terminal) as progress:
                size = api.download(task_id, fh, progress)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(output)
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return size


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
