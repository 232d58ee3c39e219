"""WSGI entry point (``tether serve`` runs it under uvicorn)."""

import io
import os
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
django_application = get_wsgi_application()

StartResponse = Callable[..., Any]


def read_chunked_body(environ: dict[str, Any]) -> None:
    """Give a chunked request body (no Content-Length) a length Django can see.

    Django reads at most CONTENT_LENGTH bytes of a body, so without one a chunked JSON
    body looked empty (``type: This field is required.``). Bodies other than uploads
    are read here, at most the JSON limit and one byte more: a body over the limit
    then answers 413 as one sent with a Content-Length does. Multipart uploads are left
    unread, to be streamed to disk: the upload endpoint answers 411 ``length_required``.
    """
    if (
        environ.get("CONTENT_LENGTH")
        or "chunked" not in str(environ.get("HTTP_TRANSFER_ENCODING", "")).lower()
    ):
        return
    if str(environ.get("CONTENT_TYPE", "")).lower().startswith("multipart/"):
        return
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream = environ["wsgi.input"]
    body = stream.read() if limit is None else stream.read(limit + 1)
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Django's app with header values stripped: Django writes ``Set-Cookie`` values with
    a leading space, which most WSGI servers tolerate but uvicorn's h11 rejects."""

    def strict_start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        return start_response(status, [(k, v.strip()) for k, v in headers], exc_info)

    read_chunked_body(environ)
    return django_application(environ, strict_start_response)
