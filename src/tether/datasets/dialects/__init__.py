"""One class per database for what dataset tables need done differently there; the
rest of the datasets code asks ``dialect()`` and reads its capability flags instead of
comparing vendor names."""

from __future__ import annotations

from django.db import connection

from tether.datasets.dialects.base import Dialect
from tether.datasets.dialects.mysql import MySQL
from tether.datasets.dialects.postgresql import PostgreSQL
from tether.datasets.dialects.sqlite import SQLite

_DIALECTS: dict[str, Dialect] = {d.name: d for d in (PostgreSQL(), SQLite(), MySQL())}


def dialect() -> Dialect:
    """The dialect of the default database (``connection.vendor``; MariaDB is mysql)."""
    return _DIALECTS[connection.vendor]
