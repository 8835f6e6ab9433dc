"""The list's filters; bulk actions re-apply the same ones from the stored query string."""

from __future__ import annotations

from datetime import timedelta

import django_filters
from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from deadletters import search
from deadletters.models import DeadLetter

RANGES = {
    "15m": ("15 minutes", timedelta(minutes=15)),
    "1h": ("1 hour", timedelta(hours=1)),
    "24h": ("24 hours", timedelta(hours=24)),
    "7d": ("7 days", timedelta(days=7)),
}


class DeadLetterFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(
        method="filter_text",
        label="Search",
        max_length=search.MAX_LENGTH,
        error_messages={
            "max_length": "The search is limited to %(limit_value)d characters;"
            " this one has %(show_value)d."
        },
        widget=forms.TextInput(
            attrs={"placeholder": "task id, message, args, kwargs", "type": "search"}
        ),
    )
    state = django_filters.ChoiceFilter(choices=DeadLetter.State.choices, empty_label="any state")
    task = django_filters.CharFilter(field_name="task_name", label="Task")
    queue = django_filters.CharFilter(field_name="queue")
    exception = django_filters.CharFilter(field_name="exception_type", label="Exception type")
    signature = django_filters.CharFilter(field_name="signature", label="Group")
    worker = django_filters.CharFilter(field_name="worker")
    range = django_filters.ChoiceFilter(
        choices=[(key, label) for key, (label, _) in RANGES.items()],
        method="filter_range",
        empty_label="any time",
        label="Failed in the last",
    )
    since = django_filters.DateTimeFilter(
        field_name="failed_at",
        lookup_expr="gte",
        label="Failed from",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )
    until = django_filters.DateTimeFilter(
        field_name="failed_at",
        lookup_expr="lt",
        label="until",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    class Meta:
        model = DeadLetter
        fields: list[str] = []

    def filter_text(
        self, queryset: QuerySet[DeadLetter], name: str, value: str
    ) -> QuerySet[DeadLetter]:
        return queryset.filter(search.matching(value)) if value.strip() else queryset

    def filter_range(
        self, queryset: QuerySet[DeadLetter], name: str, value: str
    ) -> QuerySet[DeadLetter]:
        return queryset.filter(failed_at__gte=timezone.now() - RANGES[value][1])
