"""Where uploads and exports live (server-generated names under TETHER_HOME), and
reading CSV records with line numbers, byte progress and clear errors."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether.exceptions import TetherError

FIELD_LIMIT = 256 * 1024 * 1024  # one cell may be large (a 10 MB text field is fine)
csv.field_size_limit(FIELD_LIMIT)


class DataError(TetherError):
    """The file cannot be imported as asked; the message names the line and reason."""

    code = "bad_data"
    default_message = "The data cannot be imported."


class DatasetNotFound(TetherError):
    code = "not_found"
    http_status = 404
    default_message = "No such dataset."


def data_dir(kind: str) -> Path:
    from django.conf import settings

    path = Path(settings.TETHER_HOME) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_upload_path() -> Path:
    return data_dir("uploads") / f"{uuid.uuid4().hex}.csv"


def export_path(task_id: int) -> Path:
    return data_dir("exports") / f"export-{int(task_id)}.csv"


class _Counting(io.RawIOBase):
    """A raw reader that counts the bytes read through it (for progress)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = int(self.raw.readinto(buffer))
        self.bytes += n
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


class Records:
    """CSV records of a file: ``line`` is the line number where the current record
    ends; ``bytes_read`` how far into the file reading got."""

    def __init__(self, path: Path, delimiter: str = ",") -> None:
        self.path = path
        self.size = os.path.getsize(path)
        self._counter = _Counting(open(path, "rb", buffering=0))  # noqa: SIM115
        self._text = io.TextIOWrapper(io.BufferedReader(self._counter, 1 << 20),
                                      encoding="utf-8-sig", newline="", errors="strict")
        self._reader = csv.reader(self._text, delimiter=delimiter, strict=True)

    @property
    def line(self) -> int:
        return int(self._reader.line_num)

    @property
    def bytes_read(self) -> int:
        return self._counter.bytes

    def __iter__(self) -> Iterator[list[str]]:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self._reader)
        except UnicodeDecodeError as exc:
            raise DataError(f"line {self.line + 1}: the file is not UTF-8 text "
                            f"(byte 0x{exc.object[exc.start]:02x} cannot be decoded)"
                            ) from None
        except csv.Error as exc:
            raise DataError(f"line {self.line + 1}: not valid CSV ({exc})") from None

    def skip(self, n: int) -> None:
        for _ in range(n):
            next(self)

    def close(self) -> None:
        self._text.close()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
