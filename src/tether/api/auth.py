"""``Authorization: Token <token>``: hashed, expiring, revocable API tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from tether.models import ApiToken, hash_token

LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_owner(raw: str) -> tuple[Any, ApiToken]:
    """The user of an API token and the token: raises AuthenticationFailed (with the
    reason) for an unknown, revoked or expired token or an inactive user. Shared by the
    REST API and the WebSocket and SSE endpoints."""
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_token(raw)).first()
    if token is None:
        raise exceptions.AuthenticationFailed("invalid token; log in again")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("token was revoked; log in again")
    now = timezone.now()
    if token.expires_at <= now:
        raise exceptions.AuthenticationFailed("token expired; log in again")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("user is inactive")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user, token


class TokenAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() not in (b"token", b"bearer"):
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "malformed Authorization header; use 'Authorization: Token <token>'"
            )
        try:
            raw = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("token contains invalid characters") from None
        return token_owner(raw)

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class TokenAuthScheme(OpenApiAuthenticationExtension):
    target_class = "tether.api.auth.TokenAuthentication"
    name = "TokenAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Value: `Token <token>` (from POST /api/v1/auth/token)",
        }
