"""The stock admin, for superusers' odd jobs (and as a reference in bench/console.py)."""

from django.contrib import admin

from deadletters.models import BulkAction, DeadLetter, DeadLetterGroup


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("failed_at", "task_name", "queue", "exception_type", "retries", "worker",
                    "state")  # fmt: skip
    list_filter = ("state", "kind")
    search_fields = ("task_id", "exception_message")
    date_hierarchy = "failed_at"
    readonly_fields = [f.name for f in DeadLetter._meta.fields]


@admin.register(DeadLetterGroup)
class DeadLetterGroupAdmin(admin.ModelAdmin):
    list_display = ("task_name", "exception_type", "open", "total", "last_seen")


@admin.register(BulkAction)
class BulkActionAdmin(admin.ModelAdmin):
    list_display = ("id", "action", "state", "total", "done", "skipped", "failed", "created_at")
