"""MySQL and MariaDB: rows inserted many per statement by the driver; zoned
timestamps are DATETIME values in UTC; a table is renamed with RENAME TABLE."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection

from tether.datasets.dialects.base import ROW_KEY, Dialect, q

# ER_TOO_BIG_ROWSIZE ("Row size too large (> 8126)"), HA_ERR_TO_BIG_ROW ("Too big row",
# also reported as error 1030 "Got error 139 ... from storage engine")
ROW_TOO_BIG = frozenset({1118, 139})


class MySQL(Dialect):
    name = "mysql"
    types = {
        "integer": "BIGINT",
        "float": "DOUBLE",
        "boolean": "BOOLEAN",
        "date": "DATE",
        "timestamp": "DATETIME(6)",
        "timestamptz": "DATETIME(6)",
        "text": "LONGTEXT",
    }
    key_ddl = f"{ROW_KEY} BIGINT AUTO_INCREMENT PRIMARY KEY"
    # InnoDB tables have at most 1,017 columns. A row must also fit in about 8 KB (a
    # text cell of up to 40 bytes stays in it, a longer one leaves 20), which depends
    # on its cells: see row_too_big
    max_columns = 1016

    def create_table(self, table: str, columns: Sequence[dict[str, str]], *, key: bool) -> None:
        """Without InnoDB's strict mode, which refuses a table whose widest possible row
        would not fit (more than 383 text or 996 integer columns here, whatever the
        cells): each row is checked as it is inserted instead."""
        with connection.cursor() as cur:
            cur.execute("SELECT @@SESSION.innodb_strict_mode")
            strict = int(cur.fetchone()[0])
            cur.execute("SET SESSION innodb_strict_mode = OFF")
        try:
            super().create_table(table, columns, key=key)
        finally:
            with connection.cursor() as cur:
                cur.execute("SET SESSION innodb_strict_mode = %s", [strict])

    def row_too_big(self, exc: BaseException) -> str | None:
        for err in (exc, exc.__cause__):  # (Django wraps the driver's error)
            args: tuple[Any, ...] = getattr(err, "args", ())
            if len(args) >= 2 and (
                args[0] in ROW_TOO_BIG or (args[0] == 1030 and "error 139 " in str(args[1]))
            ):
                return str(args[1]).split(". ")[0]  # (not its advice: cells are TEXT)
        return None

    def rename(self, src: str, dst: str) -> None:
        with connection.cursor() as cur:
            cur.execute(f"RENAME TABLE {q(src)} TO {q(dst)}")
