"""The admin's API tokens: who holds which, when each was last used, and revoking them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django_celery_results.models import GroupResult, TaskResult

from dashboard.api.tokens import revoke
from dashboard.models import ApiToken

# The team's results (CELERY_RESULT_BACKEND=django-db) are theirs: read through
# Celery by "where is task X?", never listed or edited here (dashboard.dbrouters).
admin.site.unregister([TaskResult, GroupResult])


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "created_at", "expires_at", "last_used_at",
                    "revoked_at")  # fmt: skip
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    # Made by ``manage.py api_token`` only: the secret is shown once, there.
    readonly_fields = ("user", "name", "prefix", "secret_hash", "created_at", "expires_at",
                       "last_used_at", "revoked_at")  # fmt: skip
    actions = ["revoke_tokens"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        n = revoke(queryset)
        self.message_user(request, f"Revoked {n} token{'s' if n != 1 else ''}.", messages.SUCCESS)
