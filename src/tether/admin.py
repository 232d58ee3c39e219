from django.contrib import admin

from tether.models import ApiToken, Pipeline, PipelineEvent, PipelineStep, Task, TaskEvent


class EventInline(admin.TabularInline):
    model = TaskEvent
    extra = 0
    can_delete = False
    readonly_fields = ["from_status", "to_status", "at", "actor", "reason"]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "owner", "status", "queue", "attempts", "created_at"]
    list_filter = ["status", "type", "queue"]
    search_fields = ["id", "owner__username", "type"]
    readonly_fields = [f.name for f in Task._meta.fields]
    inlines = [EventInline]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["hint", "user", "name", "created_at", "expires_at", "revoked_at"]
    readonly_fields = ["key_hash", "hint", "created_at", "last_used_at"]


class StepInline(admin.TabularInline):
    model = PipelineStep
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in PipelineStep._meta.fields]

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


class PipelineEventInline(admin.TabularInline):
    model = PipelineEvent
    extra = 0
    can_delete = False
    readonly_fields = EventInline.readonly_fields

    def has_add_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    """Read-only: a pipeline changes only through its controls (API, CLI)."""

    list_display = ["id", "name", "project", "owner", "status", "current_order", "created_at"]
    list_filter = ["status", "project"]
    search_fields = ["id", "name", "project", "owner__username"]
    readonly_fields = [f.name for f in Pipeline._meta.fields]
    inlines = [StepInline, PipelineEventInline]
