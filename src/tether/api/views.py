"""REST API v1 views: thin adapters over ``tether.service``."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import tether
from tether import executors, registry, service
from tether.api import serializers as s
from tether.api.schema import BROKER_DOWN, error
from tether.api.throttling import AuthThrottle
from tether.events.hub import current_hub
from tether.exceptions import InternalTaskType, InvalidParams
from tether.models import ApiToken, Task, TaskEvent
from tether.states import Status
from tether.transitions import watch

User = get_user_model()


class Pagination(PageNumberPagination):
    """``page_size`` outside 1-500 or not a number is 400 (DRF would quietly use 50 or
    500 instead: a client asking for 1000 rows would think it got them all). A ``page``
    that is not a whole number from 1 is 400 too; a page past the end is 404 (DRF
    answers both with 404 "Invalid page.")."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    last_page_strings = ()  # the document says page is an integer
    invalid_page_message = "no such page: the list has fewer pages"

    def get_page_number(self, request: Request, paginator: Any) -> int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        digits = raw.lstrip("0")
        if not (raw.isascii() and raw.isdigit() and digits):
            raise InvalidParams("page must be a whole number from 1", field="page")
        # a number this long is past the end of any list (and int() refuses 4,300 digits)
        return int(digits) if len(digits) <= 18 else 10**18

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= self.max_page_size:
            raise InvalidParams(
                f"page_size must be a whole number from 1 to {self.max_page_size}",
                field="page_size",
            )
        return int(raw)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        params: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for p in params:
            if p["name"] == self.page_size_query_param:
                p["schema"].update(minimum=1, maximum=self.max_page_size)
            if p["name"] == self.page_query_param:
                p["schema"]["minimum"] = 1
        return params


def actor(request: Request) -> str:
    return f"user:{request.user.get_username()}"


class RegisterView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [AuthThrottle]

    @extend_schema(
        request=s.RegisterSerializer,
        responses={201: inline_serializer("Registered", {"username": serializers.CharField()})},
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        ser = s.RegisterSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        user = User.objects.create_user(
            username=ser.validated_data["username"], password=ser.validated_data["password"]
        )
        return Response({"username": user.get_username()}, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes = [AuthThrottle]

    @extend_schema(
        request=s.CredentialsSerializer,
        responses={200: s.IssuedTokenSerializer, 401: error("wrong username or password")},
        tags=["auth"],
    )
    def post(self, request: Request) -> Response:
        ser = s.CredentialsSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        user = authenticate(
            request._request,
            username=ser.validated_data["username"],
            password=ser.validated_data["password"],
        )
        if user is None:
            return Response(
                {"error": {"code": "invalid_credentials", "message": "wrong username or password"}},
                status=status.HTTP_401_UNAUTHORIZED,
            )
        ttl = cast(timedelta, settings.TETHER["TOKEN_TTL"])
        token, raw = ApiToken.issue(user, ttl=ttl, name=ser.validated_data["name"])
        return Response({"token": raw, "expires_at": token.expires_at})


class LogoutView(APIView):
    @extend_schema(request=None, responses={204: None}, tags=["auth"])
    def post(self, request: Request) -> Response:
        ApiToken.objects.filter(pk=request.auth.pk).update(revoked_at=timezone.now())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenListView(generics.ListAPIView[ApiToken]):
    serializer_class = s.TokenInfoSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.filter(
            user=cast(Any, self.request.user),
            revoked_at__isnull=True,
            expires_at__gt=timezone.now(),
        )

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "current_id": self.request.auth.pk}

    @extend_schema(tags=["auth"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class TokenRevokeView(APIView):
    @extend_schema(request=None, responses={204: None}, tags=["auth"])
    def delete(self, request: Request, pk: int) -> Response:
        mine = ApiToken.objects.filter(pk=pk, user=cast(Any, request.user), revoked_at__isnull=True)
        n = mine.update(revoked_at=timezone.now())
        if not n:
            return Response(
                {"error": {"code": "not_found", "message": f"no token {pk}"}},
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(["ok", "degraded"]),
        "version": serializers.CharField(),
        "executor": serializers.CharField(),
        "database": serializers.CharField(),
        "database_status": serializers.CharField(help_text="ok, or error: <what went wrong>"),
        "event_subscribers": serializers.IntegerField(
            help_text="event streams (WebSocket subscriptions, SSE) this server process feeds"
        ),
    },
)


class HealthView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    @extend_schema(
        responses={
            200: HEALTH,
            503: OpenApiResponse(HEALTH, description="the database cannot be reached"),
        },
        tags=["meta"],
    )
    def get(self, request: Request) -> Response:
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT 1")
            db_ok = "ok"
        except Exception as exc:  # report, don't crash
            db_ok = f"error: {type(exc).__name__}"
        body = {
            "status": "ok" if db_ok == "ok" else "degraded",
            "version": tether.__version__,
            "executor": executors.current().name,
            "database": connection.vendor,
            "database_status": db_ok,
            "event_subscribers": hub.subscriber_count() if (hub := current_hub()) else 0,
        }
        return Response(body, status=200 if db_ok == "ok" else 503)


class TaskTypeListView(APIView):
    @extend_schema(responses={200: s.TaskTypeSerializer(many=True)}, tags=["tasks"])
    def get(self, request: Request) -> Response:
        data = [
            {
                "name": t.name,
                "description": t.description,
                "queue": t.queue,
                "params_schema": t.params_schema,
                "supports_pause": t.supports_pause,
                "max_attempts": t.max_attempts,
                "max_recoveries": t.max_recoveries,
                "pause_timeout": t.pause_timeout,
            }
            for t in registry.submittable_types()
        ]
        return Response(s.TaskTypeSerializer(data, many=True).data)


# How users start the internal task types instead.
INTERNAL_HINTS = {
    "csv_import": "upload the file with POST /api/v1/datasets/import",
    "csv_export": "use POST /api/v1/datasets/{name}/export",
}
STATUS_FILTER = OpenApiParameter(
    "status",
    {"type": "array", "items": {"type": "string", "enum": [st.value for st in Status]}},
    style="form",
    explode=False,
    description="only tasks in these statuses (comma-separated)",
)
TYPE_FILTER = OpenApiParameter("type", str, description="task type name")


class TaskListView(generics.ListCreateAPIView[Task]):
    serializer_class = s.TaskSerializer
    pagination_class = Pagination

    def get_queryset(self) -> QuerySet[Task]:
        qs = service.visible_tasks(self.request.user).select_related("owner").order_by("-id")
        statuses = self.request.query_params.get("status")
        if statuses:
            wanted = [x.strip() for x in statuses.split(",") if x.strip()]
            bad = [x for x in wanted if x not in Status.__members__.values()]
            if bad:
                raise InvalidParams(
                    f"unknown status {bad[0]!r}; use one of {', '.join(Status)}", field="status"
                )
            qs = qs.filter(status__in=wanted)
        type_name = self.request.query_params.get("type")
        if type_name:
            qs = qs.filter(type=type_name)
        return qs

    @extend_schema(parameters=[STATUS_FILTER, TYPE_FILTER], tags=["tasks"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=s.SubmitSerializer,
        responses={201: s.TaskSerializer, 503: error(BROKER_DOWN)},
        tags=["tasks"],
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        ser = s.SubmitSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        if registry.get_type(data["type"]).internal:
            raise InternalTaskType(
                f"task type {data['type']!r} is internal: Tether starts it itself "
                f"({INTERNAL_HINTS.get(data['type'], 'it cannot be submitted directly')})",
                field="type",
            )
        task = service.submit(
            request.user,
            data["type"],
            data["params"],
            queue=data["queue"],
            pause_timeout=data["pause_timeout"],
        )
        return Response(s.TaskSerializer(task).data, status=status.HTTP_201_CREATED)


class TaskDetailView(APIView):
    @extend_schema(responses={200: s.TaskSerializer}, tags=["tasks"])
    def get(self, request: Request, pk: int) -> Response:
        return Response(s.TaskSerializer(service.get_visible(request.user, pk)).data)


class TaskEventsView(generics.ListAPIView[TaskEvent]):
    serializer_class = s.EventSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[TaskEvent]:
        task = service.get_visible(self.request.user, self.kwargs["pk"])
        return TaskEvent.objects.filter(task=task).order_by("id")

    @extend_schema(tags=["tasks"])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


SETTLED = (Status.PAUSED, Status.CANCELLED, Status.FAILED, Status.SUCCEEDED)


POLL_EVERY = 0.002
"""Where the settle cannot be heard (no event stream here): re-read the status this often."""
RECHECK_EVERY = 0.025
"""Where it is heard on the event stream from workers: re-read it this often anyway, so a
message lost on the broker costs at most this, not the whole wait."""


def wait_settled(task_id: int, settled: threading.Event, wait: float) -> None:
    """Wait up to ``wait`` seconds for ``settled`` (a ``transitions.watch`` event of the
    task's settle): heard as it commits in this process, or on the event stream."""
    executor = executors.current()
    if executor.capabilities.in_process:
        settled.wait(wait)  # heard in this process: usually a few ms
        return
    every = RECHECK_EVERY if executor.changes_heard() else POLL_EVERY
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        if settled.wait(min(every, left)):
            return
        if Task.objects.filter(pk=task_id, status__in=SETTLED).exists():
            return


class ControlView(APIView):
    """POST /tasks/{id}/pause|resume|cancel: 202 with the task, or 409 with its status.

    The answer waits up to TETHER_CONTROL_WAIT_MS (default 100) for ``pausing`` or
    ``cancelling`` to settle, so it usually says ``paused`` or ``cancelled`` already;
    otherwise it says ``pausing``/``cancelling``. The settle is heard as it commits: in
    this process (embedded executor), or on the event stream from the workers (see
    ``wait_settled``); only a process that does not receive that stream re-reads the
    status every 2 ms."""

    action_name = ""

    @extend_schema(
        request=s.ControlSerializer,
        responses={
            202: s.TaskSerializer,
            409: error("not possible in the task's status (`illegal_transition`)"),
        },
        tags=["tasks"],
    )
    def post(self, request: Request, pk: int) -> Response:
        service.get_visible(request.user, pk)
        if not isinstance(request.data, dict):  # a bare number or list is no request
            raise ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        body = s.ControlSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        operation = getattr(service, self.action_name)
        wait = cast(float, settings.TETHER["CONTROL_WAIT"])
        with watch(pk, SETTLED) as settled:
            reached = operation(pk, actor=actor(request), reason=body.validated_data["reason"])
            if wait and reached in (Status.PAUSING, Status.CANCELLING):
                wait_settled(pk, settled, wait)
        task = Task.objects.select_related("owner").get(pk=pk)
        return Response(s.TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)
