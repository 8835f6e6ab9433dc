from __future__ import annotations

import django_tables2 as tables
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from dashboard.models import AuditEvent
from deadletters.models import DeadLetter


class DeadLetterTable(tables.Table):
    selected = tables.CheckBoxColumn(
        accessor="pk",
        attrs={
            "input": {"name": "ids", "form": "bulk", "class": "pick"},
            "th__input": {"class": "pick-page", "aria-label": "select this page"},
        },
        orderable=False,
    )
    failed_at = tables.TemplateColumn(
        template_name="deadletters/cells/failed_at.html",
        verbose_name="Failed",
        order_by=("failed_at", "id"),
    )
    task_name = tables.Column(
        linkify=lambda record: record.get_absolute_url(), empty_values=(), verbose_name="Task"
    )
    queue = tables.Column()
    exception = tables.Column(empty_values=(), verbose_name="Exception", orderable=False)
    retries = tables.Column()
    worker = tables.Column()
    state = tables.Column()

    class Meta:
        model = DeadLetter
        fields = ("selected", "failed_at", "task_name", "queue", "exception", "retries",
                  "worker", "state")  # fmt: skip
        attrs = {"class": "table", "id": "deadletters"}
        order_by = ("-failed_at",)

    def render_task_name(self, value: str) -> str:
        return value or "(unreadable message)"

    def render_exception(self, record: DeadLetter) -> SafeString:
        message = Truncator(record.exception_message).chars(120)
        return format_html("<b>{}</b> {}", record.exception_type or record.kind, message)

    def render_state(self, value: str) -> SafeString:
        return format_html('<span class="badge badge-{}">{}</span>', value.lower(), value)


class AuditTable(tables.Table):
    at = tables.DateTimeColumn(format="Y-m-d H:i:s", verbose_name="When")
    username = tables.Column(verbose_name="Who", default="system")
    action = tables.Column()
    target = tables.Column(empty_values=(), orderable=False, verbose_name="On")
    count = tables.Column(verbose_name="How many")
    reason = tables.Column()

    class Meta:
        model = AuditEvent
        fields = ("at", "username", "action", "target", "count", "reason")
        attrs = {"class": "table"}

    def render_target(self, record: AuditEvent) -> str:
        if record.target_filter:
            return f"filter {record.target_filter}"
        ids = ", ".join(record.target_ids[:10])
        more = f" and {len(record.target_ids) - 10} more" if len(record.target_ids) > 10 else ""
        return f"{record.target_type} {ids}{more}".strip()
