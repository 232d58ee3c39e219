"""Many WebSocket clients in one process, for bench/events.py's fan-out figure.

Opens ``--clients`` connections to ``--url`` (with ``Authorization: Token`` and a
``{"type": "subscribe", "tasks": "mine"}`` request when ``--token`` is given), prints
``ready`` once every one is connected and subscribed (then, with ``--wait-for-go``,
waits for a line on stdin), then counts the frames that
carry an ``"at"`` for ``--seconds`` and the latency of each (now - at, one clock: this
machine's). The last line of stdout is JSON: deliveries, seconds, latency histogram.

    python bench/_ws_clients.py --url ws://127.0.0.1:8000/ws/v1 --token T --clients 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

AT = '"at":"'


def stamp(frame: str) -> float | None:
    """The frame's ``at`` as a Unix time, read without parsing the whole frame."""
    i = frame.find(AT)
    if i < 0:
        return None
    j = frame.find('"', i + len(AT))
    return datetime.fromisoformat(frame[i + len(AT) : j].replace("Z", "+00:00")).timestamp()


class Counter:
    def __init__(self) -> None:
        self.counting = False
        self.deliveries = 0
        self.histogram: dict[int, int] = {}  # latency in whole ms -> count

    def note(self, frame: str) -> None:
        if not self.counting:
            return
        at = stamp(frame)
        if at is None:
            return
        self.deliveries += 1
        ms = int((time.time() - at) * 1000)
        self.histogram[ms] = self.histogram.get(ms, 0) + 1


async def open_client(url: str, token: str | None) -> ClientConnection:
    headers = {"Authorization": f"Token {token}"} if token else None
    ws = await connect(url, additional_headers=headers, max_size=2**21, open_timeout=60)
    if token:
        await ws.send(json.dumps({"type": "subscribe", "req": 1, "tasks": "mine"}))
        while True:  # hello, then the reply
            msg = json.loads(await ws.recv())
            if msg.get("type") == "reply":
                if not msg.get("ok"):
                    raise RuntimeError(f"subscribe refused: {msg}")
                break
    return ws


async def read(ws: ClientConnection, counter: Counter) -> None:
    try:
        async for frame in ws:
            if isinstance(frame, str):
                counter.note(frame)
    except Exception as exc:
        print(f"client lost: {exc}", file=sys.stderr)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    counter = Counter()
    clients: list[ClientConnection] = []
    for start in range(0, args.clients, 50):  # a few at a time: no connect storm
        batch = min(50, args.clients - start)
        clients += await asyncio.gather(*(open_client(args.url, args.token) for _ in range(batch)))
    readers = [asyncio.create_task(read(ws, counter)) for ws in clients]
    print("ready", flush=True)
    if args.wait_for_go:  # the benchmark starts its load once every client is in
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await asyncio.sleep(args.warmup)  # the benchmark's settling time, not synchronisation
    counter.counting = True
    began = time.monotonic()
    await asyncio.sleep(args.seconds)
    counter.counting = False
    seconds = time.monotonic() - began
    for ws in clients:
        await ws.close()
    for r in readers:
        r.cancel()
    return {
        "clients": len(clients),
        "deliveries": counter.deliveries,
        "seconds": seconds,
        "histogram": counter.histogram,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--token")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--wait-for-go", action="store_true", help="count after a line on stdin")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
