"""Pipelines in the API: the JSON of a pipeline and its steps, and the OpenAPI schema of
the document ``POST /pipelines`` takes.

That document is checked by ``tether.pipelines.spec.parse`` (whose errors name the
field, ``transformers_list[1].context.date_start``), not by a serializer: the schema
here only describes it, with one variant per task type so that each step's ``context``
is documented as that type's params.
"""

from __future__ import annotations

import copy
from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tether import registry
from tether.api.schema import NO_NUL, NOT_BLANK, WHOLE, whole_numbers
from tether.exceptions import TetherError
from tether.models import Pipeline, PipelineEvent, PipelineStep
from tether.pipelines import spec
from tether.service import MAX_PAUSE_TIMEOUT, QUEUE_RE
from tether.states import Status

PENDING = "pending"
SKIPPED = "skipped"
STEP_STATUSES = [*(st.value for st in Status), PENDING, SKIPPED]

# What a step's JSON reads from its task: the rest of a task row (params, checkpoint,
# result, input) can be large and is left in the database.
STEP_FIELDS = (
    "pipeline",
    "index",
    "order_no",
    "name",
    "queue",
    "context",
    "task",
    "undo_task",
    "rolled_back_at",
    "task__status",
    "task__progress",
)


def with_steps(pipelines: QuerySet[Pipeline]) -> QuerySet[Pipeline]:
    """``pipelines`` with their steps and the steps' tasks: one more query for all the
    pipelines of a page, however many there are."""
    steps = PipelineStep.objects.select_related("task").only(*STEP_FIELDS).order_by("index")
    return pipelines.prefetch_related(Prefetch("steps", queryset=steps))


class StepSerializer(serializers.ModelSerializer[PipelineStep]):
    task = serializers.IntegerField(
        source="task_id",
        read_only=True,
        allow_null=True,
        help_text="the step's task (GET /api/v1/tasks/{id}); null until its order starts",
    )
    status = serializers.SerializerMethodField()
    progress = serializers.SerializerMethodField()
    rollback_task = serializers.IntegerField(
        source="undo_task_id",
        read_only=True,
        allow_null=True,
        help_text="the task that rolled the step back after a cancel, if one did",
    )

    class Meta:
        model = PipelineStep
        fields = [
            "index",
            "order_no",
            "name",
            "queue",
            "context",
            "task",
            "status",
            "progress",
            "rolled_back_at",
            "rollback_task",
        ]
        read_only_fields = fields

    @extend_schema_field(
        serializers.ChoiceField(
            STEP_STATUSES,
            help_text="its task's status; pending: its order has not started; skipped: the "
            "pipeline ended before it did",
        )
    )
    def get_status(self, step: PipelineStep) -> str:
        if step.task is not None:
            return step.task.status
        return SKIPPED if self.context.get("final") else PENDING

    @extend_schema_field(serializers.JSONField(allow_null=True, help_text="its task's progress"))
    def get_progress(self, step: PipelineStep) -> Any:
        if step.task is None:
            return None
        progress = step.task.progress
        if (
            isinstance(progress, dict)
            and progress.get("eta_seconds")
            and step.task.status != Status.RUNNING
        ):
            return {**progress, "eta_seconds": None}  # not counting down
        return progress


class PipelineSerializer(serializers.ModelSerializer[Pipeline]):
    owner = serializers.CharField(source="owner.username", read_only=True)
    status = serializers.ChoiceField(choices=Status.choices())
    steps = serializers.SerializerMethodField()

    class Meta:
        model = Pipeline
        fields = [
            "id",
            "name",
            "project",
            "owner",
            "data_url",
            "status",
            "current_order",
            "pause_timeout",
            "result",
            "error",
            "created_at",
            "updated_at",
            "started_at",
            "paused_at",
            "finished_at",
            "steps",
        ]
        read_only_fields = fields

    @extend_schema_field(StepSerializer(many=True))
    def get_steps(self, pipeline: Pipeline) -> list[dict[str, Any]]:
        final = Status(pipeline.status).is_final
        steps = pipeline.steps.all()
        return list(StepSerializer(steps, many=True, context={"final": final}).data)


class PipelineEventSerializer(serializers.ModelSerializer[PipelineEvent]):
    class Meta:
        model = PipelineEvent
        fields = ["id", "from_status", "to_status", "at", "actor", "reason"]


class PipelineDocumentSerializer(serializers.Serializer[Any]):
    """Names the body of POST /pipelines in the document; ``spec.parse`` checks it."""


def _empty_context_ok(ttype: registry.TaskType) -> bool:
    try:
        ttype.validate(None)
    except TetherError:
        return False
    return True


def step_variant(ttype: registry.TaskType) -> dict[str, Any]:
    """A ``transformers_list`` entry that runs ``ttype``: its context is its params."""
    params = copy.deepcopy(ttype.params_schema)
    whole_numbers(params)
    optional = _empty_context_ok(ttype)  # a missing or null context counts as {}
    return {
        "title": ttype.name,
        "type": "object",
        "properties": {
            "name": {"const": ttype.name, "description": "the task type the step runs"},
            "order_no": {
                "type": "integer",
                "minimum": 0,
                "maximum": spec.MAX_ORDER_NO,
                "description": "steps with the same order_no run in parallel; the next order "
                f"starts when all of them have succeeded; {WHOLE}",
            },
            "context": {"anyOf": [params, {"type": "null"}]} if optional else params,
            "queue": {
                "type": "string",
                "pattern": QUEUE_RE.pattern,
                "description": f"default: the type's queue ({ttype.queue})",
            },
        },
        "required": ["name", "order_no"] if optional else ["name", "order_no", "context"],
        "additionalProperties": False,
    }


def document_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Steps are task types; a step's output is the input (ctx.input) of the "
        "next order's steps. A bad field is 400 invalid_params naming it (`field`, and "
        "`step`: the index of the bad step); nothing is created then.",
        "properties": {
            "pipeline_name": {"type": "string", "maxLength": 200, "pattern": NOT_BLANK},
            "project": {
                "type": ["string", "null"],
                "maxLength": 100,
                "pattern": NO_NUL,
                "description": "a label to filter by (GET /pipelines?project=)",
            },
            "data_url": {
                "type": ["string", "null"],
                "maxLength": spec.MAX_URL,
                "pattern": NO_NUL,
                "description": "the first order's input: empty, or an http:// or https:// "
                "URL whose host resolves to public addresses only (not loopback, private or "
                "link-local, unless the server sets TETHER_FETCH_ALLOW_PRIVATE=1)",
            },
            "pause_timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_PAUSE_TIMEOUT,
                "default": registry.DEFAULT_PAUSE_TIMEOUT,
                "description": "seconds a pause may last before the pipeline is cancelled",
            },
            "transformers_list": {
                "type": "array",
                "minItems": 1,
                "maxItems": spec.MAX_STEPS,
                "items": {"oneOf": [step_variant(t) for t in registry.submittable_types()]},
            },
        },
        "required": ["pipeline_name", "transformers_list"],
        "additionalProperties": False,
    }


class PipelineDocumentExtension(OpenApiSerializerExtension):
    target_class = PipelineDocumentSerializer

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return document_schema()
