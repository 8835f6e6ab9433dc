"""The audit log's table."""

from __future__ import annotations

from typing import Any

import django_tables2 as tables

from dashboard.models import AuditEvent
from deadletters.selectors import describe_filter, filter_group, group_names


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group_names: dict[str, str] = {}

    def before_render(self, request: Any) -> None:
        # The groups that the page's events acted on, named in one query. An
        # event stored before groups had names carries only the hash.
        page = getattr(self, "page", None)
        rows = page.object_list if page is not None else self.rows
        self.group_names = group_names(filter_group(row.record.target_filter) for row in rows)

    def render_username(self, value: str, record: AuditEvent) -> str:
        # A token acts as its user: which of the user's tokens did it is the question.
        details = record.details or {}
        if details.get("api_token"):
            return f"{value} (API token {details['api_token']})"
        return f"{value} (API)" if details.get("via") == "api" else value

    def render_target(self, record: AuditEvent) -> str:
        if record.target_filter:
            signature = filter_group(record.target_filter)
            # The name stored with the event outlives the group's row.
            name = self.group_names.get(signature) or record.details.get("group") or ""
            names = {signature: name} if name else {}
            return f"filter: {describe_filter(record.target_filter, names)}"
        ids = ", ".join(record.target_ids[:10])
        more = f" and {len(record.target_ids) - 10} more" if len(record.target_ids) > 10 else ""
        return f"{record.target_type} {ids}{more}".strip()
