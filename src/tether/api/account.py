"""``GET /auth/me``: who the calling token belongs to (what ``tether whoami`` shows when
the token comes from ``TETHER_TOKEN`` rather than a login on this machine)."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tether.api import serializers as s
from tether.models import ApiToken


class MeSerializer(serializers.Serializer[Any]):
    username = serializers.CharField()
    is_staff = serializers.BooleanField()
    token = s.TokenInfoSerializer(allow_null=True, help_text="the token of this request")


class MeView(APIView):
    @extend_schema(responses={200: MeSerializer}, tags=["auth"])
    def get(self, request: Request) -> Response:
        token = cast(ApiToken | None, request.auth)
        info = (
            s.TokenInfoSerializer(token, context={"current_id": token.pk}).data
            if token is not None
            else None
        )
        user = request.user
        return Response(
            {"username": user.get_username(), "is_staff": bool(user.is_staff), "token": info}
        )
