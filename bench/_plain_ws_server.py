"""The floor for bench/events.py's fan-out: a plain ``websockets`` server that sends
every connected client the same frames Tether's hub would (progress events of
``--tasks`` tasks, ``--rate`` each per second, stamped with ``at``), with
``websockets.broadcast``: no subscriptions, no queues, nothing but the sending.

    python bench/_plain_ws_server.py --port 8765 [--tasks 100 --rate 5 --start-at 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime

from websockets.asyncio.server import ServerConnection, broadcast, serve


def frame(task_id: int, done: int) -> str:
    return json.dumps(
        {
            "type": "event",
            "kind": "progress",
            "id": None,
            "task": task_id,
            "owner": "bench",
            "task_type": "countdown",
            "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "progress": {
                "done": done,
                "total": 60000,
                "unit": "ms",
                "percent": round(done / 600, 2),
                "rate": 1000.0,
                "eta_seconds": (60000 - done) / 1000,
                "message": None,
            },
        },
        separators=(",", ":"),
    )


async def main(args: argparse.Namespace) -> None:
    clients: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async with serve(handler, "127.0.0.1", args.port, max_size=2**20, compression=None):
        print("ready", flush=True)
        while len(clients) < args.start_at:  # connecting 1,000 clients while sending to
            await asyncio.sleep(0.05)  # them starves the handshakes: start once all are in
        period = 1.0 / (args.tasks * args.rate)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        done = 0
        while True:
            for task_id in range(1, args.tasks + 1):
                done += 1
                broadcast(clients, frame(task_id, done))
                next_at += period
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--start-at", type=int, default=0, help="clients to wait for")
    asyncio.run(main(parser.parse_args()))
