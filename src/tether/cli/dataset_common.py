"""What the dataset commands of ``tether`` share (no Django imports here): the name
check, the consoles, looking a dataset up, and a progress bar for big transfers."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from tether.cli.connection import EXIT_USAGE, CliError
from tether.cli.term import console
from tether.client import BadRequest, Client, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # importer.NAME_PATTERN
TYPES = ("integer", "float", "boolean", "date", "timestamp", "timestamptz", "text")
SHOW_PROGRESS_BYTES = 4 * 1024 * 1024  # bars for uploads/downloads bigger than this
out = console()
err = console(stderr=True)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise CliError(
            f"dataset name {name!r} is not allowed: use 1-64 letters, digits, "
            "'_' and '-', starting with a letter or digit",
            EXIT_USAGE,
        )
    return name


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


def find_dataset(api: Client, name: str) -> dict[str, Any] | None:
    try:
        return api.dataset(name)
    except NotFound:
        return None
    except BadRequest as exc:  # a name the server refuses, such as a reserved one
        raise CliError(exc.message, EXIT_USAGE) from None
