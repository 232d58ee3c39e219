"""Task, TaskEvent, ApiToken, uploads, datasets and pipelines."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from tether.states import Status


class Task(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tether_tasks"
    )
    type = models.CharField(max_length=100)
    queue = models.CharField(max_length=100, default="default")
    params = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices(), default=Status.QUEUED.value)
    progress = models.JSONField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=1)
    max_attempts = models.PositiveIntegerField(default=3)
    recoveries = models.PositiveIntegerField(
        default=0, help_text="times re-queued after its worker or server was lost"
    )
    max_recoveries = models.PositiveIntegerField(default=10)
    pause_timeout = models.FloatField(default=300.0)
    run_after = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(
        null=True, blank=True, help_text="last time a message was sent for it"
    )
    worker = models.CharField(max_length=200, null=True, blank=True)
    run_token = models.CharField(max_length=64, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    pipeline = models.ForeignKey(
        "Pipeline",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="tasks",
        help_text="the pipeline this task is a step (or a step's undoing) of",
    )
    input = models.JSONField(
        null=True, blank=True, help_text="a pipeline step's input: the previous output"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "queue", "run_after"], name="tether_task_claim"),
            models.Index(fields=["status", "id"], name="tether_task_ready"),
            models.Index(fields=["owner", "-id"], name="tether_task_owner"),
            models.Index(fields=["worker"], name="tether_task_worker"),
        ]

    def __str__(self) -> str:
        return f"{self.type}#{self.pk} ({self.status})"


class StatusChange(models.Model):
    """One recorded status change (appended, never changed): who moved what from which
    status to which, when and why."""

    from_status = models.CharField(max_length=16, choices=Status.choices(), null=True)
    to_status = models.CharField(max_length=16, choices=Status.choices())
    at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=200)
    reason = models.TextField(blank=True, default="")

    class Meta:
        abstract = True


class TaskEvent(StatusChange):
    """Append-only history of a task's status changes."""

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="events")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["task", "id"], name="tether_event_task")]

    def __str__(self) -> str:
        return f"{self.task_id}: {self.from_status} -> {self.to_status}"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiToken(models.Model):
    """An API token; only its SHA-256 is stored. Expires and can be revoked."""

    PREFIX = "tt_"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tether_tokens"
    )
    key_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="first characters, to tell tokens apart")
    name = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.hint}… ({self.user})"

    @classmethod
    def issue(cls, user: Any, *, ttl: timedelta, name: str = "") -> tuple[ApiToken, str]:
        raw = cls.PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user,
            key_hash=hash_token(raw),
            hint=raw[:10],
            name=name,
            expires_at=timezone.now() + ttl,
        )
        return token, raw

    @property
    def is_valid(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


def new_upload_id() -> str:
    """A public upload id: 128 random bits, so no one can name another user's upload."""
    return secrets.token_hex(16)


class Upload(models.Model):
    """A file received by the API, kept under a server-generated name until the task
    that imports it is done with it. Tasks name it by ``public_id``, never by ``pk``."""

    public_id = models.CharField(max_length=32, unique=True, default=new_upload_id)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tether_uploads"
    )
    path = models.CharField(max_length=300, help_text="relative to TETHER_HOME/uploads")
    original_name = models.CharField(max_length=255, blank=True, default="")
    size = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"upload {self.public_id} ({self.original_name})"


class Dataset(models.Model):
    """A table created or filled by CSV imports, owned by a user. ``table`` is the
    server-generated name of the database table holding its rows."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tether_datasets"
    )
    name = models.CharField(max_length=64)
    table = models.CharField(max_length=63, unique=True)
    columns = models.JSONField(default=list)
    row_count = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    last_import_at = models.DateTimeField(null=True, blank=True)
    last_import_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="tether_dataset_owner_name")
        ]

    def __str__(self) -> str:
        return f"dataset {self.name} ({self.row_count} rows)"


class Pipeline(models.Model):
    """Ordered steps, each an ordinary task; steps sharing an ``order_no`` run in
    parallel. Its status changes only through ``tether.pipelines.moves``."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tether_pipelines"
    )
    name = models.CharField(max_length=200)
    project = models.CharField(max_length=100, blank=True, default="")
    data_url = models.CharField(max_length=2000, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices(), default=Status.QUEUED.value)
    current_order = models.IntegerField(help_text="order_no of the steps started last")
    pause_timeout = models.FloatField(default=300.0)
    undoing = models.BooleanField(
        default=False, help_text="cancelled: its finished steps are being rolled back"
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["owner", "-id"], name="tether_pipeline_owner"),
            models.Index(fields=["status"], name="tether_pipeline_status"),
        ]

    def __str__(self) -> str:
        return f"pipeline {self.name}#{self.pk} ({self.status})"


class PipelineStep(models.Model):
    """One entry of a pipeline's ``transformers_list``: a task type, its params and
    its order. ``task`` is set when its order starts (and replaced by a retry). What
    the type's registration says is kept here, so that a worker that does not know the
    type can still start the step."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField(help_text="position in transformers_list")
    order_no = models.IntegerField()
    name = models.CharField(max_length=100, help_text="the task type")
    context = models.JSONField(default=dict, help_text="the task's params")
    queue = models.CharField(max_length=100)
    max_attempts = models.PositiveIntegerField(default=3)
    max_recoveries = models.PositiveIntegerField(default=10)
    has_rollback = models.BooleanField(default=True)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    undo_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rolled_back_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pipeline", "index"]
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "index"], name="tether_step_index")
        ]

    def __str__(self) -> str:
        return f"step {self.index} ({self.name}) of pipeline {self.pipeline_id}"


class PipelineEvent(StatusChange):
    """Append-only history of a pipeline's status changes."""

    pipeline = models.ForeignKey(Pipeline, on_delete=models.CASCADE, related_name="events")

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["pipeline", "id"], name="tether_pevent_pipeline")]

    def __str__(self) -> str:
        return f"pipeline {self.pipeline_id}: {self.from_status} -> {self.to_status}"
