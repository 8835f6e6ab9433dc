from __future__ import annotations

import django_tables2 as tables
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from deadletters.models import DeadLetter


class DeadLetterTable(tables.Table):
    selected = tables.CheckBoxColumn(
        accessor="pk",
        attrs={
            "input": {
                "name": "ids",
                "form": "bulk",
                "class": "pick",
                "aria-label": lambda record: f"select dead letter {record.pk}",
            },
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

    def render_queue(self, value: str) -> SafeString:
        return format_html('<a href="{}">{}</a>', reverse("queue_detail", args=[value]), value)

    def render_exception(self, record: DeadLetter) -> SafeString:
        message = Truncator(record.exception_message).chars(120)
        return format_html("<b>{}</b> {}", record.exception_type or record.kind, message)

    def render_state(self, value: str) -> SafeString:
        return format_html('<span class="badge badge-{}">{}</span>', value.lower(), value)


class GroupTable(tables.Table):
    """Failure groups; rows need ``series`` (``selectors.attach_series``) for the chart."""

    signature = tables.TemplateColumn(
        template_name="deadletters/cells/group.html", verbose_name="Group"
    )
    open = tables.Column(verbose_name="Open", attrs={"td": {"class": "num"}})
    total = tables.Column(verbose_name="Total", attrs={"td": {"class": "num"}})
    first_seen = tables.TemplateColumn(
        template_name="deadletters/cells/seen.html", verbose_name="First seen"
    )
    last_seen = tables.TemplateColumn(
        template_name="deadletters/cells/seen.html", verbose_name="Last seen"
    )
    chart = tables.TemplateColumn(
        template_name="deadletters/cells/group_chart.html", verbose_name="Last 24 h"
    )
    actions = tables.TemplateColumn(
        template_name="deadletters/cells/group_actions.html",
        verbose_name="",
        attrs={"td": {"class": "group-actions"}},
    )

    class Meta:
        attrs = {"class": "table", "id": "group-table"}
        # The selector's order: open groups first, on the index (-open, -last_seen).
        orderable = False
