from __future__ import annotations

from typing import Any

import django_tables2 as tables
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from dashboard.models import WorkerSnapshot
from dashboard.queues.checks import NOT_REPORTED, Check
from dashboard.queues.selectors import QueueRow
from dashboard.templatetags.ops import duration, rate


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


class QueueTable(tables.Table):
    name = tables.TemplateColumn(
        template_name="dashboard/cells/queue_name.html", verbose_name="Queue"
    )
    depth = tables.Column(empty_values=(), verbose_name="Depth")
    ready = tables.Column(empty_values=(), verbose_name="Ready / unacked")
    consumers = tables.TemplateColumn(
        template_name="dashboard/cells/queue_consumers.html", verbose_name="Consumers"
    )
    oldest_age = tables.Column(empty_values=(), verbose_name="Oldest message")
    in_rate = tables.Column(empty_values=(), verbose_name="In / out")
    chart = tables.TemplateColumn(
        template_name="dashboard/cells/queue_chart.html", verbose_name="Last hour"
    )
    actions = tables.TemplateColumn(
        template_name="dashboard/cells/queue_actions.html", verbose_name=""
    )

    class Meta:
        attrs = {"class": "table queues", "id": "queues"}
        orderable = False
        row_attrs = {"class": lambda record: "warn" if record.missing_consumer else ""}

    def render_depth(self, record: QueueRow) -> str:
        if not record.exists:
            return format_html('<span class="muted">{}</span>', "no such queue")
        return _count(record.depth)

    def render_ready(self, record: QueueRow) -> str:
        if record.ready is None:
            return "unknown"
        unacked = "unknown" if record.unacked is None else f"{record.unacked:,}"
        return f"{record.ready:,} / {unacked}"

    def render_oldest_age(self, record: QueueRow) -> str:
        if record.depth == 0:
            return "—"  # nothing waits, so nothing is old
        if record.oldest_age is None:
            return format_html(
                '<span class="muted" title="{}">unknown</span>',
                "the oldest message carries no x_sent_at stamp, or the broker does not say",
            )
        return duration(record.oldest_age)

    def render_in_rate(self, record: QueueRow) -> str:
        return f"{rate(record.in_rate)} / {rate(record.out_rate)}"


class WorkerTable(tables.Table):
    hostname = tables.Column(linkify=True, verbose_name="Worker")
    online = tables.TemplateColumn(
        template_name="dashboard/cells/worker_status.html", verbose_name="Status"
    )
    pool = tables.Column(empty_values=(), verbose_name="Pool")
    concurrency = tables.Column(empty_values=(), verbose_name="Processes")
    active_count = tables.Column(verbose_name="Active")
    reserved_count = tables.Column(verbose_name="Reserved")
    processed = tables.Column(verbose_name="Processed")
    loadavg = tables.Column(empty_values=(), verbose_name="Load")
    uptime = tables.Column(empty_values=(), verbose_name="Up")
    queues = tables.Column(empty_values=(), verbose_name="Queues")
    checks = tables.Column(empty_values=(), verbose_name="Checks")
    sw_ver = tables.Column(empty_values=(), verbose_name="Celery")

    class Meta:
        model = WorkerSnapshot
        fields = (
            "hostname",
            "online",
            "pool",
            "concurrency",
            "active_count",
            "reserved_count",
            "processed",
            "loadavg",
            "uptime",
            "queues",
            "checks",
            "sw_ver",
        )
        attrs = {"class": "table workers", "id": "workers"}
        orderable = False
        row_attrs = {"class": lambda record: "" if record.online else "offline"}

    def __init__(
        self, *args: Any, checks: dict[str, list[Check]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # Each worker's fleet checks, by hostname (selectors.fleet_checks).
        self.checks = checks or {}

    def render_pool(self, record: WorkerSnapshot) -> str:
        size = "?" if record.pool_size is None else record.pool_size
        text = f"{record.pool or '?'}, {size}"
        if record.autoscale_enabled:
            text += f" (autoscale {record.autoscale_min} to {record.autoscale_max})"
        return text

    def render_concurrency(self, record: WorkerSnapshot) -> str:
        return "?" if record.concurrency is None else str(record.concurrency)

    def render_processed(self, value: int) -> str:
        return f"{value:,}"

    def render_loadavg(self, record: WorkerSnapshot) -> str:
        return " ".join(f"{x:.2f}" for x in record.loadavg) if record.loadavg else "?"

    def render_uptime(self, record: WorkerSnapshot) -> str:
        return duration(record.uptime) if record.uptime is not None else "?"

    def render_queues(self, record: WorkerSnapshot) -> str:
        if not record.queues:
            return "none"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("queue_detail", args=[queue]), queue) for queue in record.queues if queue),
        )

    def render_checks(self, record: WorkerSnapshot) -> str:
        """How many checks are flagged, and which, in words (never a colour alone)."""
        checks = self.checks.get(record.hostname, [])
        if all(check.unknown for check in checks):
            return format_html('<span class="muted" title="{}">not reported</span>', NOT_REPORTED)
        flagged = [check for check in checks if check.open]
        notes = [
            f"{n} {state}"
            for state in ("silenced", "unknown")
            if (n := sum(1 for check in checks if check.state == state))
        ]
        aside = f" ({', '.join(notes)})" if notes else ""
        if not flagged:
            return format_html('<span class="badge badge-online">all passed</span>{}', aside)
        return format_html(
            '<a href="{}#worker-checks"><span class="badge badge-warn">{} flagged</span></a> {}{}',
            record.get_absolute_url(),
            len(flagged),
            ", ".join(check.flagged_as for check in flagged),
            aside,
        )

    def render_sw_ver(self, record: WorkerSnapshot) -> str:
        return record.sw_ver or "?"
