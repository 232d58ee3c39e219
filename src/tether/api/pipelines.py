"""Pipelines API: submit the data-pipeline document as it is, list and show pipelines
with their steps, their history, and pause, resume, cancel or retry one as a whole.

Thin adapters over ``tether.pipelines``: ``spec.parse`` checks a document, ``control``
creates and moves pipelines and decides who sees which (another user's pipeline
answers 404; staff see all), the serializers shape the answers.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tether import service
from tether.api import serializers as s
from tether.api.parsers import UniqueKeysJSONParser
from tether.api.pipeline_serializers import (
    PipelineDocumentSerializer,
    PipelineEventSerializer,
    PipelineSerializer,
    with_steps,
)
from tether.api.schema import BROKER_DOWN, error
from tether.api.views import Pagination
from tether.exceptions import InvalidParams
from tether.models import Pipeline, PipelineEvent
from tether.pipelines import control, spec
from tether.pipelines.moves import PipelineNotFound
from tether.states import Status

TAGS = ["pipelines"]
STATUS_FILTER = OpenApiParameter(
    "status",
    {"type": "array", "items": {"type": "string", "enum": [st.value for st in Status]}},
    style="form",
    explode=False,
    description="only pipelines in these statuses (comma-separated)",
)
PROJECT_FILTER = OpenApiParameter("project", str, description="only pipelines of this project")
NOT_FOUND = "no such pipeline (another user's answers the same)"


def statuses(request: Request) -> list[str]:
    """The statuses ``?status=`` asks for ([] for any); an unknown one is 400."""
    raw = request.query_params.get("status") or ""
    wanted = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [x for x in wanted if x not in Status.__members__.values()]
    if bad:
        raise InvalidParams(
            f"unknown status {bad[0][:100]!r}; use one of {', '.join(Status)}", field="status"
        )
    return wanted


def load(user: Any, pipeline_id: int) -> Pipeline:
    """The pipeline with its steps, if ``user`` may see it."""
    found = with_steps(control.visible(user)).filter(id=pipeline_id).first()
    if found is None:
        raise PipelineNotFound(f"no pipeline {pipeline_id}")
    return found


class PipelineListView(generics.ListAPIView[Pipeline]):
    serializer_class = PipelineSerializer
    pagination_class = Pagination
    parser_classes = [UniqueKeysJSONParser]

    def get_queryset(self) -> QuerySet[Pipeline]:
        qs = control.visible(self.request.user).order_by("-id")
        wanted = statuses(self.request)
        if wanted:
            qs = qs.filter(status__in=wanted)
        project = self.request.query_params.get("project")
        if project:
            qs = qs.filter(project=project)
        return with_steps(qs)

    @extend_schema(
        parameters=[STATUS_FILTER, PROJECT_FILTER],
        tags=TAGS,
        summary="Your pipelines, newest first (staff: everyone's)",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=PipelineDocumentSerializer,
        responses={
            201: PipelineSerializer,
            400: error(
                "invalid input: `invalid_params` names the `field` "
                "(transformers_list[1].context.date_start) and the bad `step`'s index; "
                "`duplicate_key` when an object names a key twice; nothing was created"
            ),
            503: error(BROKER_DOWN),
        },
        tags=TAGS,
        summary="Submit a pipeline: its first order's steps are queued at once",
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        pipeline = control.create(request.user, spec.parse(request.data))
        body = PipelineSerializer(load(request.user, pipeline.pk)).data
        return Response(body, status=status.HTTP_201_CREATED)


class PipelineDetailView(APIView):
    @extend_schema(
        responses={200: PipelineSerializer, 404: error(NOT_FOUND)},
        tags=TAGS,
        summary="One pipeline with its steps",
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(PipelineSerializer(load(request.user, pk)).data)


class PipelineEventsView(generics.ListAPIView[PipelineEvent]):
    serializer_class = PipelineEventSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[PipelineEvent]:
        pipeline = control.get_visible(self.request.user, self.kwargs["pk"])
        return PipelineEvent.objects.filter(pipeline=pipeline).order_by("id")

    @extend_schema(
        responses={200: PipelineEventSerializer(many=True), 404: error(NOT_FOUND)},
        tags=TAGS,
        summary="The pipeline's status history, oldest first",
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class PipelineControlView(APIView):
    """Pause: queued steps pause at once, running ones at their next control point, and
    no new step starts. Resume: a paused pipeline continues where it was. Cancel: running
    steps are cancelled with their rollback, then every finished step is rolled back, the
    last first. Retry: a failed pipeline runs again from its failed steps.

    202 with the pipeline as it is after the request (``pausing``/``cancelling`` until
    its steps have settled), or 409 with its status."""

    parser_classes = [UniqueKeysJSONParser]
    action_name = ""

    @extend_schema(
        request=s.ControlSerializer,
        responses={
            202: PipelineSerializer,
            404: error(NOT_FOUND),
            409: error("not possible in the pipeline's status (`illegal_transition`)"),
        },
        tags=TAGS,
    )
    def post(self, request: Request, pk: int) -> Response:
        control.get_visible(request.user, pk)
        if not isinstance(request.data, dict):  # a bare number or list is no request
            raise ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        body = s.ControlSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        operation = getattr(control, self.action_name)
        operation(pk, actor=service.actor_of(request.user), reason=body.validated_data["reason"])
        data = PipelineSerializer(load(request.user, pk)).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
