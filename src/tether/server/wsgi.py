"""WSGI entry point (``tether serve`` runs it under uvicorn)."""

import os
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tether.server.settings")
django_application = get_wsgi_application()

StartResponse = Callable[..., Any]


def application(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Django's app with header values stripped: Django writes ``Set-Cookie`` values with
    a leading space, which most WSGI servers tolerate but uvicorn's h11 rejects."""

    def strict_start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Any:
        return start_response(status, [(k, v.strip()) for k, v in headers], exc_info)

    return django_application(environ, strict_start_response)
