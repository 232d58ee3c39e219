"""MySQL and MariaDB: rows inserted many per statement by the driver; zoned
timestamps are DATETIME values in UTC; a table is renamed with RENAME TABLE."""

from __future__ import annotations

from django.db import connection

from tether.datasets.dialects.base import ROW_KEY, Dialect, q


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
    # InnoDB keeps a row within about 8 KB: a text cell of up to 40 bytes stays in the
    # row, so 196 such columns are the most it can always store (1,000 integer columns
    # do not fit either)
    max_columns = 190

    def rename(self, src: str, dst: str) -> None:
        with connection.cursor() as cur:
            cur.execute(f"RENAME TABLE {q(src)} TO {q(dst)}")
