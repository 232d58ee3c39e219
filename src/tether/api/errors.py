"""Every API error has the shape ``{"error": {"code", "message", ...}}``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import (
    DisallowedHost,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_handler

from tether.api.parsers import body_too_large
from tether.exceptions import TetherError

log = logging.getLogger("tether.api")
API_PREFIX = "/api/"


def _first_message(detail: Any, path: str = "") -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub = key if key == "non_field_errors" else (f"{path}.{key}" if path else key)
            msg = _first_message(value, "" if key == "non_field_errors" else sub)
            return msg
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], path)
    text = str(detail)
    return f"{path}: {text}" if path else text


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def suspicious(exc: Exception) -> tuple[int, dict[str, Any]]:
    """Status and body for what Django refuses before or while reading a request."""
    if isinstance(exc, RequestDataTooBig):
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, error_body(
            "too_large", str(body_too_large().detail)
        )
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return 400, error_body("too_many_fields", "too many query or form fields")
    if isinstance(exc, DisallowedHost):
        return 400, error_body(
            "bad_host", "this server does not answer to that Host header (TETHER_ALLOWED_HOSTS)"
        )
    return 400, error_body("bad_request", "the request was refused as malformed")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, TetherError):
        return Response(error_body(exc.code, exc.message, **exc.extra), status=exc.http_status)
    if isinstance(exc, SuspiciousOperation):
        http_status, body = suspicious(exc)
        return Response(body, status=http_status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        # ``fields`` is always an object: an error of no one field is a non-field error
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        body = error_body("invalid", _first_message(exc.detail), fields=fields)
    elif isinstance(exc, exceptions.APIException):
        detail = exc.detail
        code = detail.code if isinstance(detail, exceptions.ErrorDetail) else exc.default_code
        body = error_body(str(code), _first_message(detail))
    else:  # pragma: no cover
        body = error_body("error", str(exc))
    response.data = body
    return response


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        error_body("not_found", f"no such endpoint: {request.path}"),
        status=status.HTTP_404_NOT_FOUND,
    )


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        error_body("server_error", "internal error; see the server log"),
        status=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (a bad Host header, too many fields, a body over the limit, found
    before a view runs): JSON under /api/, Django's own page elsewhere."""
    if not request.path.startswith(API_PREFIX):
        return defaults.bad_request(request, exception)
    http_status, body = suspicious(exception)
    return JsonResponse(body, status=http_status)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not request.path.startswith(API_PREFIX):
        return defaults.permission_denied(request, exception)
    return JsonResponse(error_body("permission_denied", "not allowed"), status=403)


class ApiErrorMiddleware:
    """JSON under /api/ with DEBUG on too (the API's clients parse JSON): a bad Host
    header is refused here, before Django's debug page could answer it, and an
    exception no view handled answers a JSON 500 (the traceback goes to the log)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX):
            try:
                request.get_host()
            except DisallowedHost as exc:
                return bad_request(request, exc)
            if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
                # no database takes NUL in a text value (PostgreSQL raises)
                return JsonResponse(
                    error_body("bad_request", "the URL holds a NUL character (%00)"), status=400
                )
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX) or isinstance(
            exc, Http404 | PermissionDenied | SuspiciousOperation
        ):
            return None  # Django's handlers answer these (JSON under /api/ too)
        log.error("Internal Server Error: %s", request.path, exc_info=exc)
        return server_error(request)
