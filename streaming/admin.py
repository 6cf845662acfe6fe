from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .models import Connection
from .stats import connection_overview


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    """Read-only list of WebSocket connections, with the overview above it."""

    list_display = [
        "opened_at",
        "closed_at",
        "duration",
        "words_delivered",
        "close_code",
        "state",
        "via",
        "client_address",
        "short_user_agent",
    ]
    list_filter = ["state", "via", "close_code", "opened_at"]
    search_fields = ["client_address", "user_agent", "process"]
    date_hierarchy = "opened_at"
    readonly_fields = [field.name for field in Connection._meta.fields]
    list_per_page = 100

    @admin.display(description="user agent")
    def short_user_agent(self, obj: Connection) -> str:
        return obj.user_agent[:60]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        extra_context = {**(extra_context or {}), "overview": connection_overview()}
        return super().changelist_view(request, extra_context)
