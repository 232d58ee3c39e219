"""Request bodies sent chunked (``Transfer-Encoding: chunked``, no Content-Length) to a
real ``tether serve``: JSON is read as if it had a length (bounded by the 1 MiB JSON
limit), and an upload, which is streamed to disk, asks for a Content-Length (411)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from tests.acceptance.conftest import PASSWORD, Server, ServerFactory, login

MIB = 1024 * 1024


def chunked(
    srv: Server, path: str, parts: list[bytes], content_type: str, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``parts`` as chunks (no Content-Length); the status and the JSON answer."""
    where = urlsplit(srv.url)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
    headers = {"Content-Type": content_type, "Transfer-Encoding": "chunked"}
    if token:
        headers["Authorization"] = token

    def body() -> Iterator[bytes]:
        yield from parts

    try:
        conn.request("POST", f"/api/v1{path}", body=body(), headers=headers, encode_chunked=True)
        r = conn.getresponse()
        assert r.getheader("Content-Type", "").startswith("application/json"), r.getheaders()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def split(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_chunked_json_body_is_read(server: ServerFactory) -> None:
    srv = server(workers=1)
    client = login(srv)
    token = client.headers["Authorization"]
    me = client.get("/auth/me").json()["username"]

    body = json.dumps({"type": "countdown", "params": {"seconds": 0}}).encode()
    status, answer = chunked(srv, "/tasks", split(body), "application/json", token)
    assert status == 201, answer
    assert answer["type"] == "countdown" and answer["params"]["seconds"] == 0, answer

    body = json.dumps({"username": me, "password": PASSWORD}).encode()
    status, answer = chunked(srv, "/auth/token", split(body), "application/json")
    assert status == 200 and answer["token"], answer

    # over the JSON limit: 413 as with a Content-Length, and nothing is created
    before = client.get("/tasks").json()["count"]
    big = b'{"type": "countdown", "params": {"seconds": 0}, "x": "' + b"y" * MIB + b'"}'
    status, answer = chunked(srv, "/tasks", split(big, 64 * 1024), "application/json", token)
    assert status == 413 and answer["error"]["code"] == "too_large", answer
    assert client.get("/tasks").json()["count"] == before

    # not JSON: 415 as with a Content-Length (chunked form data was read as no data)
    status, answer = chunked(
        srv, "/tasks", [b"type=countdown"], "application/x-www-form-urlencoded", token
    )
    assert status == 415 and answer["error"]["code"] == "unsupported_media_type", answer


def test_a_chunked_upload_asks_for_a_content_length(server: ServerFactory) -> None:
    srv = server(workers=1)
    token = login(srv).headers["Authorization"]
    boundary = "tether-boundary"
    form = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="dataset"\r\n\r\nd\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\nid\n1\n\r\n--{boundary}--\r\n"
    ).encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    status, answer = chunked(srv, "/datasets/import", split(form), content_type, token)
    assert status == 411 and answer["error"]["code"] == "length_required", answer
