"""A real HTTP file server in a thread, for the fetch step's tests: byte ranges (or
not), redirects, a body held back at a gate until the test opens it, a response that
claims a huge size, and an endless body without a length. It records every request."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PIECE = 16 * 1024


@dataclass
class Site:
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    huge: dict[str, int] = field(default_factory=dict)  # path -> claimed Content-Length
    endless: set[str] = field(default_factory=set)  # no length, bytes until disconnected
    ranges: bool = True
    gate: threading.Event | None = None  # the first full answer waits here ...
    gate_after: int = 0  # ... after sending this many bytes of its body
    at_gate: threading.Event = field(default_factory=threading.Event)  # it waits there
    requests: list[dict[str, Any]] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def etag(self, path: str) -> str:
        return f'"v{len(self.files[path])}-{hash(self.files[path]) & 0xFFFF:x}"'

    def url(self, path: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def start(self) -> Site:
        site = self

        class Handler(_Handler):
            pass

        Handler.site = site
        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    site: Site

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.site
        path = self.path
        site.requests.append(
            {
                "path": path,
                "host": self.headers.get("Host"),
                "range": self.headers.get("Range"),
                "if_range": self.headers.get("If-Range"),
            }
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if path in site.redirects:
                self.send_response(302)
                self.send_header("Location", site.redirects[path])
                self.end_headers()
            elif path in site.huge:
                self.send_response(200)
                self.send_header("Content-Length", str(site.huge[path]))
                self.end_headers()
                self.wfile.write(b"x" * PIECE)
            elif path in site.endless:
                self.send_response(200)
                self.end_headers()
                for _ in range(100_000):  # (until the client hangs up)
                    self.wfile.write(b"y" * PIECE)
            elif path in site.files:
                self._file(path)
            else:
                self.send_error(404)

    def _file(self, path: str) -> None:
        site = self.site
        data = site.files[path]
        etag = site.etag(path)
        wanted = self.headers.get("Range", "")
        start = 0
        if site.ranges and wanted.startswith("bytes=") and self.headers.get("If-Range") == etag:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Type", "text/csv")
        self.send_header("ETag", etag)
        if site.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        gate = site.gate if start == 0 and site.gate_after else None
        if gate is not None:
            site.gate_after, first = 0, site.gate_after  # only the first answer waits
            self.wfile.write(data[:first])
            self.wfile.flush()
            site.at_gate.set()
            gate.wait(60)
            start = first
        for at in range(start, len(data), PIECE):
            self.wfile.write(data[at : at + PIECE])
