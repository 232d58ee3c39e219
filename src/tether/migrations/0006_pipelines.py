"""Pipelines and their steps and history; a task may be a pipeline step with an input."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("tether", "0005_upload_public_id"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="task",
            name="input",
            field=models.JSONField(
                blank=True, help_text="a pipeline step's input: the previous output", null=True
            ),
        ),
        migrations.CreateModel(
            name="Pipeline",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200)),
                ("project", models.CharField(blank=True, default="", max_length=100)),
                ("data_url", models.CharField(blank=True, default="", max_length=2000)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("pausing", "pausing"),
                            ("paused", "paused"),
                            ("cancelling", "cancelling"),
                            ("cancelled", "cancelled"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                (
                    "current_order",
                    models.IntegerField(help_text="order_no of the steps started last"),
                ),
                ("pause_timeout", models.FloatField(default=300.0)),
                (
                    "undoing",
                    models.BooleanField(
                        default=False,
                        help_text="cancelled: its finished steps are being rolled back",
                    ),
                ),
                ("result", models.JSONField(blank=True, null=True)),
                ("error", models.TextField(blank=True, default="")),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("paused_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "owner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="tether_pipelines",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-id"],
            },
        ),
        migrations.AddField(
            model_name="task",
            name="pipeline",
            field=models.ForeignKey(
                blank=True,
                help_text="the pipeline this task is a step (or a step's undoing) of",
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="tasks",
                to="tether.pipeline",
            ),
        ),
        migrations.CreateModel(
            name="PipelineEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "from_status",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("pausing", "pausing"),
                            ("paused", "paused"),
                            ("cancelling", "cancelling"),
                            ("cancelled", "cancelled"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                        ],
                        max_length=16,
                        null=True,
                    ),
                ),
                (
                    "to_status",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("pausing", "pausing"),
                            ("paused", "paused"),
                            ("cancelling", "cancelling"),
                            ("cancelled", "cancelled"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                        ],
                        max_length=16,
                    ),
                ),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                ("actor", models.CharField(max_length=200)),
                ("reason", models.TextField(blank=True, default="")),
                (
                    "pipeline",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="tether.pipeline",
                    ),
                ),
            ],
            options={
                "ordering": ["id"],
            },
        ),
        migrations.CreateModel(
            name="PipelineStep",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("index", models.PositiveIntegerField(help_text="position in transformers_list")),
                ("order_no", models.IntegerField()),
                ("name", models.CharField(help_text="the task type", max_length=100)),
                ("context", models.JSONField(default=dict, help_text="the task's params")),
                ("queue", models.CharField(max_length=100)),
                ("max_attempts", models.PositiveIntegerField(default=3)),
                ("max_recoveries", models.PositiveIntegerField(default=10)),
                ("has_rollback", models.BooleanField(default=True)),
                ("rolled_back_at", models.DateTimeField(blank=True, null=True)),
                (
                    "pipeline",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="tether.pipeline",
                    ),
                ),
                (
                    "task",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="tether.task",
                    ),
                ),
                (
                    "undo_task",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="tether.task",
                    ),
                ),
            ],
            options={
                "ordering": ["pipeline", "index"],
            },
        ),
        migrations.AddIndex(
            model_name="pipeline",
            index=models.Index(fields=["owner", "-id"], name="tether_pipeline_owner"),
        ),
        migrations.AddIndex(
            model_name="pipeline",
            index=models.Index(fields=["status"], name="tether_pipeline_status"),
        ),
        migrations.AddIndex(
            model_name="pipelineevent",
            index=models.Index(fields=["pipeline", "id"], name="tether_pevent_pipeline"),
        ),
        migrations.AddConstraint(
            model_name="pipelinestep",
            constraint=models.UniqueConstraint(
                fields=("pipeline", "index"), name="tether_step_index"
            ),
        ),
    ]
