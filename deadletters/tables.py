from __future__ import annotations

import django_tables2 as tables
from django.utils.html import format_html
from django.utils.text import Truncator

from deadletters.models import DeadLetter


class DeadLetterTable(tables.Table):
    failed_at = tables.TemplateColumn(
        template_name="deadletters/cells/failed_at.html", verbose_name="Failed"
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
        fields = ("failed_at", "task_name", "queue", "exception", "retries", "worker", "state")
        attrs = {"class": "table"}
        orderable = False

    def render_task_name(self, value: str) -> str:
        return value or "(unreadable message)"

    def render_exception(self, record: DeadLetter) -> str:
        message = Truncator(record.exception_message).chars(120)
        return format_html("<b>{}</b> {}", record.exception_type or record.kind, message)

    def render_state(self, value: str) -> str:
        return format_html('<span class="badge badge-{}">{}</span>', value.lower(), value)
