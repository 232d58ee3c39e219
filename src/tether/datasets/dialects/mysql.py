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

    def rename(self, src: str, dst: str) -> None:
        with connection.cursor() as cur:
            cur.execute(f"RENAME TABLE {q(src)} TO {q(dst)}")
