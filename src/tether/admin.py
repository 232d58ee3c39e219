from django.contrib import admin

from tether.models import ApiToken, Task, TaskEvent


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
