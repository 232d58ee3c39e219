"""Multipart uploads streamed straight to disk (``POST /api/v1/datasets/import``).

Django's default handlers keep small files in memory and spool big ones to a temporary
file that is then copied. ``DiskUploadHandler`` instead writes the one ``file`` field,
chunk by chunk, to a server-generated name under ``TETHER_HOME/uploads`` and stops the
upload as soon as it passes the size limit, deleting what it wrote. Memory use is one
chunk, whatever the file's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload

from tether.datasets.files import new_upload_path

FIELD = "file"
CHUNK = 256 * 1024
# Room for the multipart framing and the form fields around the file (Django caps the
# fields at DATA_UPLOAD_MAX_MEMORY_SIZE, 1 MiB): a body longer than the limit plus this
# is refused from its Content-Length alone, before a byte of it is read.
FRAMING_SLACK = 1024 * 1024 + 64 * 1024


class StoredFile(UploadedFile):
    """What ``request.FILES["file"]`` holds: where the upload was written (``path``), the
    client's file name (``name``) and the size. It holds no open file."""

    def __init__(self, path: Path, name: str, size: int) -> None:
        super().__init__(file=None, name=name, content_type="text/csv", size=size)
        self.path = path

    def close(self) -> None:  # Django closes uploaded files at the end of the request
        pass


class DiskUploadHandler(FileUploadHandler):
    """Writes the ``file`` field to ``files.new_upload_path()``; other file fields and a
    second ``file`` are skipped. ``too_large`` is set (and the file deleted) when it
    passes ``limit`` bytes."""

    chunk_size = CHUNK

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.too_large = False
        self.path: Path | None = None  # the file being or last written
        self.stored: StoredFile | None = None
        self._out: Any = None
        self._size = 0

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        if field_name != FIELD or self.path is not None:
            raise SkipFile()
        super().new_file(field_name, file_name, *args, **kwargs)
        self.path = new_upload_path()
        self._out = open(self.path, "xb")  # noqa: SIM115 - closed in file_complete/discard
        self._size = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if self._out is None:
            return raw_data
        self._size += len(raw_data)
        if self._size > self.limit:
            self.too_large = True
            self.discard()
            raise StopUpload(connection_reset=False)  # read (and drop) the rest: <= slack
        self._out.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> StoredFile | None:
        if self._out is None or self.path is None:
            return None
        self._out.flush()
        os.fsync(self._out.fileno())  # accepted means on disk: the import may run later
        self._out.close()
        self._out = None
        self.stored = StoredFile(self.path, str(self.file_name or ""), self._size)
        return self.stored

    def upload_interrupted(self) -> None:
        """The client went away mid-file."""
        self.discard()

    def discard(self) -> None:
        """Delete whatever this handler wrote (also after a complete file)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        self.stored = None
