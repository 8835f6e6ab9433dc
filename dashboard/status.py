"""Recording how the monitor's collectors fare (see ``CollectorStatus``)."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from dashboard.models import CollectorStatus


def record_success(name: str) -> None:
    now = timezone.now()
    updated = CollectorStatus.objects.filter(name=name).update(
        last_attempt_at=now, last_success_at=now, last_error="", failing_since=None
    )
    if not updated:
        CollectorStatus.objects.update_or_create(
            name=name, defaults={"last_attempt_at": now, "last_success_at": now}
        )


def record_failure(name: str, error: BaseException | str) -> None:
    """Keep the first failure's time: "unreachable since 03:12", not "since now"."""
    now = timezone.now()
    message = str(error)[:2000] or type(error).__name__
    status, _ = CollectorStatus.objects.get_or_create(name=name)
    CollectorStatus.objects.filter(pk=status.pk).update(last_attempt_at=now, last_error=message)
    CollectorStatus.objects.filter(Q(pk=status.pk) & Q(failing_since__isnull=True)).update(
        failing_since=now
    )
