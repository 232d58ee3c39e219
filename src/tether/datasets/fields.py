"""Counting the fields of CSV records in raw bytes, as the csv module (strict) splits
them, without making the fields (a record of millions of fields is refused after
reading its first part, in bounded memory), and the limit itself (``max_columns``).

The bytes are fed in order, in parts of any size (a part may end inside a quoted field
or between the two quotes of a doubled one). A quote starts a quoted field only at the
start of a field; elsewhere it is an ordinary character, as the csv module reads it.
Work is linear in the bytes and per quoted field, never per unquoted field.
"""

from __future__ import annotations

import re
from typing import Any

MAX_COLUMNS = 1000  # TETHER_CSV_MAX_COLUMNS: the most fields a record may have


def max_columns() -> int:
    """The most columns (fields of a record) an import takes: TETHER_CSV_MAX_COLUMNS,
    or fewer where the database cannot store that many in a row (``Dialect``)."""
    from django.conf import settings

    from tether.datasets.dialects import dialect

    conf: dict[str, Any] = getattr(settings, "TETHER", {})
    return max(1, min(int(conf.get("CSV_MAX_COLUMNS", MAX_COLUMNS)), dialect().max_columns))


# The rest of a quoted field up to its closing quote: any run of non-quote bytes and
# doubled quotes, then a quote that is not the first of a pair (or the last byte fed).
_QUOTED_REST = re.compile(rb'[^"]*(?:""[^"]*)*"(?!")')
_RECORD_END = re.compile(rb"\r\n|\r|\n")


class FieldCounter:
    """Fields of the record being fed (``fields``); ``feed`` says when it goes over
    ``limit``. A line break outside quotes ends a record (the count starts again)."""

    def __init__(self, delimiter: bytes, limit: int) -> None:
        self.sep = delimiter
        self.limit = limit
        self.fields = 1
        self.quoted = False  # inside a quoted field
        self.pending = False  # ... and the last byte fed was a quote (closing or doubled)
        self.start = True  # at the start of a field
        sep = re.escape(delimiter)
        self._quote_start = re.compile(rb"(?:(?<=" + sep + rb')|(?<=[\r\n]))"')

    def feed(self, data: bytes) -> bool:
        """Take the next bytes; True once the current record has more than ``limit``
        fields (then ``fields`` is a lower bound of how many it has)."""
        p, n = 0, len(data)
        if self.pending and n:
            self.pending = False
            if data[:1] == b'"':  # a doubled quote: still inside
                p = 1
            else:
                self.quoted = False
        while p < n:
            if self.quoted:
                m = _QUOTED_REST.match(data, p)
                if m is None:
                    return False  # the field goes on past these bytes
                p = m.end()
                if p == n:
                    self.pending = True  # closing, unless the next byte is a quote
                    return False
                self.quoted = False
                self.start = False
                continue
            if self.start and data[p : p + 1] == b'"':
                self.quoted, self.start = True, False
                p += 1
                continue
            found = self._quote_start.search(data, p)
            q = found.start() if found is not None else n
            segment = data[p:q]
            breaks = b"\n" in segment or b"\r" in segment
            pieces = _RECORD_END.split(segment) if breaks else [segment]
            for i, piece in enumerate(pieces):
                if i:
                    self.fields = 1  # a new record
                self.fields += piece.count(self.sep)
                if self.fields > self.limit:
                    return True
            if found is None:
                self.start = data[n - 1 : n] in (b"\r", b"\n") or data.endswith(self.sep)
                return False
            p, self.start = q, True
        return False
