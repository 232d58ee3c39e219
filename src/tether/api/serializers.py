from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from tether.api.fields import StrictCharField, StrictFloatField, StrictRegexField
from tether.api.schema import TaskTypeName
from tether.models import ApiToken, Task, TaskEvent
from tether.states import Status

User = get_user_model()


class RegisterSerializer(serializers.Serializer[Any]):
    username = StrictRegexField(
        r"^[\w.@+-]{1,150}$",
        max_length=150,
        trim_whitespace=False,
        error_messages={"invalid": "use 1-150 letters, digits and @/./+/-/_ only"},
    )
    password = StrictCharField(
        write_only=True, max_length=128, trim_whitespace=False, style={"input_type": "password"}
    )

    def validate_username(self, value: str) -> str:
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("this username is taken")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            password_validation.validate_password(
                attrs["password"], User(username=attrs["username"])
            )
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class CredentialsSerializer(serializers.Serializer[Any]):
    username = StrictCharField(max_length=150, trim_whitespace=False)
    password = StrictCharField(
        max_length=128, trim_whitespace=False, style={"input_type": "password"}
    )
    name = StrictCharField(
        max_length=100,
        trim_whitespace=False,
        required=False,
        allow_blank=True,
        default="",
        help_text="a label to tell your tokens apart",
    )


class IssuedTokenSerializer(serializers.Serializer[Any]):
    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class TokenInfoSerializer(serializers.ModelSerializer[ApiToken]):
    current = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = ["id", "name", "hint", "created_at", "expires_at", "last_used_at", "current"]

    def get_current(self, obj: ApiToken) -> bool:
        return bool(self.context.get("current_id") == obj.pk)


class TaskTypeSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    params_schema = serializers.JSONField()
    supports_pause = serializers.BooleanField()
    max_attempts = serializers.IntegerField()
    max_recoveries = serializers.IntegerField()
    pause_timeout = serializers.FloatField()


class SubmitSerializer(serializers.Serializer[Any]):
    type = TaskTypeName(max_length=100)
    params = serializers.JSONField(required=False, default=dict)
    queue = StrictCharField(
        max_length=100, trim_whitespace=False, required=False, allow_null=True, default=None
    )
    pause_timeout = StrictFloatField(
        required=False,
        allow_null=True,
        default=None,
        help_text="seconds a pause may last before the task is cancelled (default 300)",
    )


class TaskSerializer(serializers.ModelSerializer[Task]):
    owner = serializers.CharField(source="owner.username", read_only=True)
    status = serializers.ChoiceField(choices=Status.choices())

    class Meta:
        model = Task
        fields = [
            "id",
            "type",
            "queue",
            "owner",
            "status",
            "params",
            "progress",
            "result",
            "error",
            "attempts",
            "max_attempts",
            "recoveries",
            "max_recoveries",
            "pause_timeout",
            "pipeline",
            "created_at",
            "updated_at",
            "started_at",
            "paused_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance: Task) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        progress = data.get("progress")
        if (
            isinstance(progress, dict)
            and progress.get("eta_seconds")
            and instance.status != Status.RUNNING
        ):
            data["progress"] = {**progress, "eta_seconds": None}  # not counting down
        return data


class EventSerializer(serializers.ModelSerializer[TaskEvent]):
    class Meta:
        model = TaskEvent
        fields = ["id", "from_status", "to_status", "at", "actor", "reason"]


class ControlSerializer(serializers.Serializer[Any]):
    reason = StrictCharField(
        trim_whitespace=False, max_length=500, required=False, default="requested"
    )
