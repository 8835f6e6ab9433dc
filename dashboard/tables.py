"""The audit log's table."""

from __future__ import annotations

import django_tables2 as tables

from dashboard.models import AuditEvent


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
