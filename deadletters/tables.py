from __future__ import annotations

import django_tables2 as tables

from deadletters.models import DeadLetter


class DeadLetterTable(tables.Table):
    """The list's columns: their headings and orderings. The rows are written
    out by the table's template (deadletters/_table.html), not cell by cell."""

    selected = tables.CheckBoxColumn(
        accessor="pk",
        attrs={"th__input": {"class": "pick-page", "aria-label": "select this page"}},
        orderable=False,
    )
    failed_at = tables.Column(verbose_name="Failed", order_by=("failed_at", "id"))
    task_name = tables.Column(verbose_name="Task")
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
        template_name = "deadletters/_table.html"


class GroupTable(tables.Table):
    """Failure groups: the columns' headings. The rows are written out by the
    table's template (deadletters/_group_table.html); they need ``series``
    (``selectors.attach_series``) for the chart."""

    signature = tables.Column(verbose_name="Group")
    open = tables.Column(verbose_name="Open")
    total = tables.Column(verbose_name="Total")
    first_seen = tables.Column(verbose_name="First seen")
    last_seen = tables.Column(verbose_name="Last seen")
    chart = tables.Column(verbose_name="Last 24 h")
    actions = tables.Column(verbose_name="")

    class Meta:
        attrs = {"class": "table", "id": "group-table"}
        template_name = "deadletters/_group_table.html"
        # The selector's order: open groups first, on the index (-open, -last_seen).
        orderable = False
