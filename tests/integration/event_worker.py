"""A process that commits transitions and publishes them to the broker as a
``tether worker`` does: the other process of test_event_transport.py.

    python -m tests.integration.event_worker    (TETHER_DATABASE_URL, TETHER_BROKER_URL)

Commands on stdin, one a line; each is answered ``ok`` on stdout once what it committed
has been handed to the broker:

    run          start an embedded executor (2 slots) on the shared database (it runs
                 pipeline steps too, so this process moves their pipelines)
    burst ID N   commit N transitions of the queued task ID (pause, resume, pause, ...)
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
    import django

    django.setup()
    from tests.integration import pipeline_tasks, tasks  # noqa: F401 (registers it_ledger, it_step)
    from tether import service
    from tether.events import transport
    from tether.executors.embedded import EmbeddedExecutor

    publisher = transport.start_publisher()
    assert publisher is not None, "TETHER_BROKER_URL is not set"
    executor: EmbeddedExecutor | None = None
    for line in sys.stdin:
        command, *args = line.split()
        if command == "run":
            executor = EmbeddedExecutor(2, poll_interval=0.02, maintenance_interval=0.05)
            executor.start(recover=False)  # the database is shared: recover no one's tasks
        elif command == "burst":
            task_id, n = int(args[0]), int(args[1])
            for i in range(n):
                move = service.pause if i % 2 == 0 else service.resume
                move(task_id, actor="user:burst")
        else:
            raise SystemExit(f"unknown command {command!r}")
        publisher.flush(30)
        print("ok", flush=True)
    if executor is not None:
        executor.stop(10)
    transport.stop(10)


if __name__ == "__main__":
    main()
