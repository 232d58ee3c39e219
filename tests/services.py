"""Is a service up?  ``python -m tests.services postgresql``

Exit 0: reachable.  Exit 1: unreachable, skip (local run).  Exit 2: unreachable under
CI=true, where a missing service must fail the run, never skip it."""

from __future__ import annotations

import os
import socket
import sys

PORTS = {"postgresql": 5432, "mariadb": 3306, "redis": 6379, "rabbitmq": 5672}


def main(name: str) -> int:
    port = PORTS[name]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return 0
    except OSError:
        in_ci = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
        print(
            f"{name} is not reachable on 127.0.0.1:{port}"
            + (" (required under CI=true)" if in_ci else "; skipping its tests"),
            file=sys.stderr,
        )
        return 2 if in_ci else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
