from __future__ import annotations

import django_filters
from django import forms

from dashboard.models import AuditEvent


class AuditFilter(django_filters.FilterSet):
    username = django_filters.CharFilter(label="Who")
    action = django_filters.CharFilter(lookup_expr="startswith", label="Action")
    since = django_filters.DateTimeFilter(
        field_name="at",
        lookup_expr="gte",
        label="Since",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    target = django_filters.CharFilter(
        field_name="target_ids", lookup_expr="icontains", label="Dead letter id"
    )

    class Meta:
        model = AuditEvent
        fields: list[str] = []
