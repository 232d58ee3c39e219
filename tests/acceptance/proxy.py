"""A TCP proxy in front of a test server that sees what the clients ask: it records the
request line of every HTTP request passing through (``GET /api/v1/tasks/7``), and can
refuse WebSocket handshakes as a server (or a proxy) without ``/ws/v1`` would."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

REQUEST_LINE = re.compile(rb"(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (/\S*) HTTP/1\.[01]\r\n")
NO_WEBSOCKET = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class Proxy:
    def __init__(self, upstream_port: int, *, refuse_websockets: bool = False) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.refuse_websockets = refuse_websockets
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def seen(self, method: str, path: str) -> int:
        """How many ``method path`` requests passed (query strings ignored)."""
        with self._lock:
            return sum(1 for r in self.requests if r.split("?")[0] == f"{method} {path}")

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._sockets.append(client)
        first = client.recv(65536)
        if self.refuse_websockets and first.startswith(b"GET /ws/"):
            self._record(first)
            client.sendall(NO_WEBSOCKET)
            client.close()
            return
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True, first)

    def _pump(
        self, src: socket.socket, dst: socket.socket, requests: bool, first: bytes = b""
    ) -> None:
        pending = b""
        data = first
        try:
            while True:
                if data:
                    dst.sendall(data)
                    if requests:
                        pending = self._record(pending + data)
                data = src.recv(65536)
                if not data:
                    break
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _record(self, data: bytes) -> bytes:
        """Record the request lines in ``data``; returns what may start the next one."""
        end = 0
        for match in REQUEST_LINE.finditer(data):
            with self._lock:
                self.requests.append(f"{match[1].decode()} {match[2].decode()}")
            end = match.end()
        return data[end:][-4096:]


@contextmanager
def proxy(upstream_port: int, *, refuse_websockets: bool = False) -> Iterator[Proxy]:
    p = Proxy(upstream_port, refuse_websockets=refuse_websockets)
    try:
        yield p
    finally:
        p.close()
