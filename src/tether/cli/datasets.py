"""Dataset commands of the ``tether`` program (no Django imports here)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.http import CliError

PANEL = "Datasets"


def gen_csv(
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write ('-' for "
                                                                "standard output).")],
    rows: Annotated[int, typer.Option("--rows", "-n", min=0, max=100_000_000,
                                      help="Data rows (plus a header).")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same file).")] = 42,
) -> None:
    """Write realistic dummy CSV data: integers, floats, booleans, dates, timestamps
    with a zone, and text with quotes, commas and newlines (9 columns)."""
    from tether.datasets import generate

    started = time.monotonic()
    if str(output) == "-":
        generate.write(sys.stdout, rows, seed)
        return
    tmp = output.with_name(f".{output.name}.part-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as out:
            written = generate.write(out, rows, seed)
        tmp.replace(output)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"cannot write {output}: {exc.strerror or exc}", 1) from None
    size = output.stat().st_size
    typer.echo(f"wrote {written:,} rows ({size / 1e6:.1f} MB) to {output} in "
               f"{time.monotonic() - started:.1f}s", err=True)


def register(app: typer.Typer) -> None:
    app.command("gen-csv", rich_help_panel=PANEL)(gen_csv)
