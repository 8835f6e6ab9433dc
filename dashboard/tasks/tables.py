"""The task list: one row per task name, sortable by every figure."""

from __future__ import annotations

from typing import Any

import django_tables2 as tables
from django.utils.html import format_html
from django.utils.safestring import SafeString

from dashboard.tasks.selectors import TaskFigures
from dashboard.templatetags.ops import per_minute, percent, seconds

NUM = {"td": {"class": "num"}, "th": {"class": "num"}}


class SecondsColumn(tables.Column):
    """A percentile in seconds; "—" where nothing was timed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(empty_values=(), attrs=NUM, **kwargs)

    def render(self, value: float | None) -> str:
        return "—" if value is None else seconds(value)


class TaskTable(tables.Table):
    name = tables.Column(verbose_name="Task", empty_values=())
    rate = tables.Column(verbose_name="Rate", empty_values=(), attrs=NUM)
    failure_ratio = tables.Column(verbose_name="Failed", empty_values=(), attrs=NUM)
    runtime_p50 = SecondsColumn(verbose_name="Runtime p50")
    runtime_p95 = SecondsColumn(verbose_name="Runtime p95")
    runtime_p99 = SecondsColumn(verbose_name="Runtime p99")
    wait_p50 = SecondsColumn(verbose_name="Wait p50")
    wait_p95 = SecondsColumn(verbose_name="Wait p95")
    wait_p99 = SecondsColumn(verbose_name="Wait p99")

    class Meta:
        attrs = {"class": "table task-figures", "id": "tasks"}
        order_by = ("name",)
        row_attrs = {
            "class": lambda record: "warn" if (record.failure_ratio or 0) > 0.05 else "",
        }

    def __init__(self, *args: Any, window: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = window

    def render_name(self, record: TaskFigures) -> SafeString:
        url = record.get_absolute_url(window=self.window)
        if not url:
            return format_html('<span class="muted">{}</span>', "(no name)")
        return format_html('<a href="{}"><b>{}</b></a>', url, record.name)

    def render_rate(self, record: TaskFigures) -> str:
        return "—" if record.rate is None else per_minute(record.rate)

    def render_failure_ratio(self, record: TaskFigures) -> SafeString | str:
        if record.failure_ratio is None:
            return "—"
        return format_html(
            '{} <small class="muted">({} of {})</small>',
            percent(record.failure_ratio),
            f"{record.outcomes.failed:,}",
            f"{record.outcomes.finished:,}",
        )
