"""Every error the datasets code raises, in one place.

The public ones derive from ``TetherError``: each has its API code, HTTP status and a
default message, and the API maps them to ``{"error": {code, message}}`` in one place
(``api/errors.py``). The others are signals between the parts of an import or an
export (a cell that does not parse, a statement cancelled because the task is to stop,
a COPY that PostgreSQL refused); they never reach a user as such.
"""

from __future__ import annotations

from tether.exceptions import TetherError

# -- answered to users -----------------------------------------------------------------


class DataError(TetherError):
    """The file cannot be imported as asked; the message names the line and reason."""

    code = "bad_data"
    default_message = "The data cannot be imported."


class NotText(DataError):
    """The upload is not UTF-8 text (compressed, binary, another encoding)."""

    code = "not_text"
    default_message = "The file is not UTF-8 text."


class ColumnsMismatch(DataError):
    """An append's columns are not the dataset's (missing, extra or unknown names)."""

    code = "columns_mismatch"
    default_message = "The file's columns do not match the dataset's."


class TooManyColumns(DataError):
    """A record has more fields than an import takes (TETHER_CSV_MAX_COLUMNS)."""

    code = "too_many_columns"
    default_message = "The file has more columns than the server accepts."


class RowTooBig(DataError):
    """The database refused a row as too big for it (its cells, not their count: how
    much a row holds depends on what is in it)."""

    code = "row_too_big"
    default_message = "A row of the file is too big for the database."


class DatasetNotFound(TetherError):
    code = "not_found"
    http_status = 404
    default_message = "No such dataset."


class DatasetExists(TetherError):
    code = "dataset_exists"
    http_status = 409
    default_message = "A dataset of that name exists already."


class DatasetBusy(TetherError):
    code = "dataset_busy"
    http_status = 409
    default_message = "An import or export of the dataset is not finished."


class UploadTooLarge(TetherError):
    code = "too_large"
    http_status = 413
    default_message = "The upload is larger than the server accepts."


class LengthRequired(TetherError):
    code = "length_required"
    http_status = 411
    default_message = "Send the upload with a Content-Length header (not chunked)."


# -- signals between the parts of an import or export ----------------------------------


class CellError(ValueError):
    """A cell (or a column name) that does not parse; the caller adds the line."""


class Interrupted(Exception):
    """A long statement was cancelled because the task is to stop (pause, cancel)."""


class CopyMismatch(Exception):
    """COPY read another number of rows than it was sent records."""


class BatchInterrupted(Exception):
    """A cancel (or a lost lease) arrived during a batch: the batch is given up."""


class BatchRejected(Exception):
    """PostgreSQL refused the raw CSV of a batch: it is redone cell by cell. Its
    argument is the byte offset where the refused batch ended."""
