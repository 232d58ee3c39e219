"""The ``fetch`` step: download a URL into the owner's data area, pausable and resumable.

The file goes to ``TETHER_DATA_DIR/fetch/<owner id>/<task id><suffix>``. Every chunk
written is a control point whose checkpoint records the bytes on disk, so a pause stops
the download within one chunk and frees the worker; the resumed run asks for the rest
with ``Range: bytes=N-`` and ``If-Range`` (the ETag or Last-Modified it saw): a 206
is appended, a 200 (the server ignores ranges, or the file changed) starts over.

Only http(s) to public addresses: the host is resolved once, every address checked
(``tether.netguard``), and the connection goes to a checked address with the URL's
host in the Host header and TLS SNI/certificate check, so a name that resolves
differently the second time cannot reach the server's own network. Redirects are
followed by hand (at most MAX_REDIRECTS), each target checked the same way. The size
limit (TETHER_FETCH_MAX_BYTES, default 1 GiB) is checked against Content-Length
before anything is written and again while streaming.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from tether import netguard, registry
from tether.context import TaskContext
from tether.datasets.files import size_text
from tether.exceptions import TetherError
from tether.registry import task
from tether.tasks import areas

DEFAULT_MAX_BYTES = 1 << 30
MAX_REDIRECTS = 5
CHUNK = 64 * 1024
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
REDIRECTS = (301, 302, 303, 307, 308)
URL_PATTERN = r"^https?://[^\s/?#]+\S*$"
SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")
CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
UNSATISFIED_RANGE = re.compile(r"^bytes \*/(\d+)$")


class FetchError(TetherError):
    """A download that cannot succeed as asked (refused address, too big, HTTP 4xx)."""

    code = "fetch_failed"
    default_message = "The URL cannot be fetched."


class Transient(Exception):
    """A failure worth another attempt (HTTP 5xx); the partial file is kept."""


def server_limit() -> int:
    """The largest file a fetch writes (TETHER_FETCH_MAX_BYTES, default 1 GiB)."""
    raw = os.environ.get("TETHER_FETCH_MAX_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise FetchError(f"TETHER_FETCH_MAX_BYTES must be a whole number of bytes, not {raw!r}")
    return int(raw)


def _source(url: str | None, value: Any) -> str:
    if url:
        return url
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return str(value["url"])
    if isinstance(value, str) and value:
        return value
    raise FetchError(
        "fetch needs a URL: its url param, or as its input the pipeline's data_url or "
        "a previous step's output with a 'url'"
    )


def _checked(url: str) -> tuple[httpx.URL, list[netguard.Address]]:
    """The URL and the addresses its host may be reached at; FetchError if none."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise FetchError(f"only http:// and https:// URLs can be fetched, not {url[:200]!r}")
    try:
        target = httpx.URL(url)
        port = parts.port
    except (httpx.InvalidURL, ValueError) as exc:
        raise FetchError(f"not a valid URL: {url[:200]!r} ({exc})") from None
    host = target.host
    try:
        addresses = netguard.resolve(host, port or (443 if target.scheme == "https" else 80))
    except (OSError, UnicodeError, ValueError) as exc:
        raise FetchError(f"cannot resolve {host!r} ({exc})") from None
    problem = netguard.refused_addresses(host, addresses)
    if problem:
        raise FetchError(f"refused to fetch {url[:200]}: {problem}")
    return target, addresses


def _open(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[httpx.Response, str]:
    """Send GET, following redirects by hand; returns the open streaming response."""
    for _ in range(MAX_REDIRECTS + 1):
        target, addresses = _checked(url)
        response = _connect(client, target, addresses, headers)
        if response.status_code not in REDIRECTS:
            return response, url
        location = response.headers.get("location", "")
        response.close()
        if not location:
            raise FetchError(f"HTTP {response.status_code} without a Location from {url[:200]}")
        url = urljoin(url, location)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _connect(
    client: httpx.Client,
    target: httpx.URL,
    addresses: list[netguard.Address],
    headers: dict[str, str],
) -> httpx.Response:
    """Connect to the checked addresses in turn (never to a new lookup of the name)."""
    failure: Exception | None = None
    for address in addresses:
        request = client.build_request(
            "GET",
            target.copy_with(host=str(address)),
            headers={**headers, "Host": target.netloc.decode("ascii")},
            extensions={"sni_hostname": target.host},
        )
        try:
            return client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
    assert failure is not None
    raise failure


def _file_for(ctx: TaskContext, url: str) -> Path:
    suffix = PurePosixPath(urlsplit(url).path).suffix
    name = f"{ctx.task_id}{suffix if SUFFIX.match(suffix) else '.download'}"
    return areas.owner_dir("fetch", areas.owner_of(ctx)) / name


def _delete_file(ctx: TaskContext) -> None:
    """Rollback: the downloaded file (or what there is of it) is deleted."""
    name = ctx.state.get("path")
    if isinstance(name, str):
        root = areas.data_root()
        path = (root / name).resolve()
        if path.is_relative_to(root / "fetch"):
            path.unlink(missing_ok=True)


def _validator(response: httpx.Response) -> str | None:
    """What If-Range may carry: a strong ETag, else Last-Modified."""
    etag = response.headers.get("etag", "")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("last-modified") or None


@task(
    params={
        "type": "object",
        "properties": {
            "url": {
                "type": "string",
                "maxLength": 2000,
                "pattern": URL_PATTERN,
                "description": "http(s) URL to download (default: the step's input)",
            },
            "max_bytes": {
                "type": "integer",
                "minimum": 1,
                "description": "refuse a larger file (at most TETHER_FETCH_MAX_BYTES)",
            },
        },
        "additionalProperties": False,
    },
    rollback=_delete_file,
)
def fetch(ctx: TaskContext, *, url: str | None = None, max_bytes: int | None = None) -> Any:
    """Download a URL (its url param, or its input: the pipeline's data_url or a
    previous output with a 'url') into TETHER_DATA_DIR/fetch/<you>/. Resumable with
    HTTP ranges, size-limited (TETHER_FETCH_MAX_BYTES), public addresses only. Output:
    {path (relative to TETHER_DATA_DIR), bytes, content_type, url, sha256}."""
    source = _source(url, ctx.input)
    limit = min(server_limit(), max_bytes) if max_bytes else server_limit()
    state = dict(ctx.state)
    if not state.get("path"):
        state = {"path": areas.relative(_file_for(ctx, source)), "bytes": 0}
        ctx.checkpoint(state)  # before the file exists: a rollback always finds it
    path = areas.data_root() / state["path"]
    try:
        return _download(ctx, source, path, state, limit)
    except Exception as exc:
        last = ctx.attempt >= registry.get_type("fetch").max_attempts
        if isinstance(exc, TetherError) or last:
            path.unlink(missing_ok=True)  # a failed fetch leaves nothing behind
        if isinstance(exc, httpx.HTTPError | Transient):
            raise Transient(f"fetching {source[:200]}: {exc}") from None
        raise


def _download(
    ctx: TaskContext, source: str, path: Path, state: dict[str, Any], limit: int
) -> dict[str, Any]:
    offset = _resume_point(path, state)
    digest = hashlib.sha256()
    if offset:
        with open(path, "rb") as done:
            while block := done.read(1 << 20):
                digest.update(block)
    if not (offset and state.get("total") == offset):  # (else it was complete already)
        digest = _request(ctx, source, path, state, digest, offset, limit)
    return {
        "path": state["path"],
        "bytes": state["bytes"],
        "content_type": state.get("content_type", ""),
        "url": source,
        "sha256": digest.hexdigest(),
    }


def _request(
    ctx: TaskContext,
    source: str,
    path: Path,
    state: dict[str, Any],
    digest: Any,
    offset: int,
    limit: int,
) -> Any:
    """GET the file (its rest from ``offset`` if the server still has the same one)
    and write it; returns the digest of the whole file."""
    headers = {"Accept-Encoding": "identity", "User-Agent": "tether-fetch"}
    if offset and state.get("validator"):
        headers.update(Range=f"bytes={offset}-", **{"If-Range": state["validator"]})
    with httpx.Client(timeout=TIMEOUT, trust_env=False, follow_redirects=False) as client:
        response, final = _open(client, source, headers)
        try:
            offset, total, body = _start(response, final, offset, limit)
            if offset == 0:
                digest = hashlib.sha256()
            state.update(bytes=offset, total=total)
            if body:
                state.update(
                    validator=_validator(response),
                    content_type=response.headers.get("content-type", ""),
                )
                _stream(ctx, response, path, state, digest, limit)
        finally:
            response.close()
    return digest


def _resume_point(path: Path, state: dict[str, Any]) -> int:
    """Where a resumed run continues: what the checkpoint recorded, as far as the file
    holds it (a crash may lose the last checkpoint, never bytes before it)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    offset = min(int(state.get("bytes", 0)), size)
    if size != offset:
        with open(path, "r+b") as out:
            out.truncate(offset)
    return offset


def _start(
    response: httpx.Response, url: str, offset: int, limit: int
) -> tuple[int, int | None, bool]:
    """Check the response's status and size; returns where its body goes in the file,
    the whole file's size when known, and whether the body is to be written."""
    code = response.status_code
    if code == 416 and offset:
        match = UNSATISFIED_RANGE.match(response.headers.get("content-range", ""))
        if match and int(match.group(1)) == offset:  # it had all of it already
            return offset, offset, False
        raise Transient(f"HTTP 416 for the rest from byte {offset} of {url[:200]}")
    if code >= 500:
        raise Transient(f"HTTP {code} from {url[:200]}")
    if code not in (200, 206):
        raise FetchError(f"HTTP {code} {response.reason_phrase} from {url[:200]}")
    length = response.headers.get("content-length", "")
    body = int(length) if length.isdigit() else None
    if code == 206:
        match = CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if not match or int(match.group(1)) != offset:
            raise Transient(f"a range from byte {offset} was answered from another place")
        whole = match.group(3)
        total = int(whole) if whole.isdigit() else None
    else:
        offset, total = 0, body
    if total is not None and total > limit:
        raise FetchError(
            f"{url[:200]} is {size_text(total)}, more than the {size_text(limit)} a fetch "
            "may download (TETHER_FETCH_MAX_BYTES)"
        )
    return offset, total, True


def _stream(
    ctx: TaskContext,
    response: httpx.Response,
    path: Path,
    state: dict[str, Any],
    digest: Any,
    limit: int,
) -> None:
    offset = int(state["bytes"])
    total = state.get("total")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with open(fd, "r+b", buffering=0) as out:
        out.truncate(offset)
        out.seek(offset)
        ctx.checkpoint(state, sync=False)
        for chunk in response.iter_raw(CHUNK):
            if offset + len(chunk) > limit:
                raise FetchError(
                    f"the download passed {size_text(limit)}, the most a fetch may "
                    "download (TETHER_FETCH_MAX_BYTES)"
                )
            out.write(chunk)  # unbuffered: on disk (cache) before the checkpoint says so
            digest.update(chunk)
            offset += len(chunk)
            state["bytes"] = offset
            ctx.checkpoint(state, sync=False)  # a control point: pause stops here
            ctx.progress(offset, total=total, unit="bytes")
        os.fsync(out.fileno())
    if total is not None and offset != total:
        raise Transient(f"the connection ended at byte {offset} of {total}")
    state["total"] = offset
