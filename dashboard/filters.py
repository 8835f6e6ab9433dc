from __future__ import annotations

import django_filters
from django import forms

from dashboard.models import AuditEvent

# Longer is not a name or an id; SQLite refuses LIKE patterns past 50,000 characters.
MAX_TEXT = 255


class AuditFilter(django_filters.FilterSet):
    username = django_filters.CharFilter(label="Who", max_length=MAX_TEXT)
    action = django_filters.CharFilter(
        lookup_expr="startswith", label="Action", max_length=MAX_TEXT
    )
    since = django_filters.DateTimeFilter(
        field_name="at",
        lookup_expr="gte",
        label="Since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    target = django_filters.CharFilter(
        field_name="target_ids", lookup_expr="icontains", label="Dead letter id",
        max_length=MAX_TEXT,
    )  # fmt: skip

    class Meta:
        model = AuditEvent
        fields: list[str] = []
