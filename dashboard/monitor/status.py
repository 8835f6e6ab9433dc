"""Recording how the monitor's collectors fare (see ``CollectorStatus``)."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from dashboard.models import CollectorStatus, QueueSnapshot


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


INGEST_COLLECTOR = "ingest"


def ingest_trouble(now: datetime | None = None) -> str:
    """Why dead-letter ingestion looks stuck, in words; '' when it does not.

    Stuck: the monitor's ingest keeps failing, or has not reported for
    ``DEADLETTERS_INGEST_STUCK_AFTER`` seconds, or the oldest envelope in the
    dead-letter queue has waited longer than that (as last sampled).
    """
    now = now or timezone.now()
    limit = settings.DEADLETTERS_INGEST_STUCK_AFTER
    status = CollectorStatus.objects.filter(name=INGEST_COLLECTOR).first()
    if status is not None and status.failing_since is not None:
        since = timezone.localtime(status.failing_since)
        return f"Dead-letter ingestion failing since {since:%H:%M}: {status.last_error[:200]}"
    if status is not None and status.last_attempt_at is not None:
        silent = (now - status.last_attempt_at).total_seconds()
        if silent > limit:
            since = timezone.localtime(status.last_attempt_at)
            return (
                f"Dead-letter ingestion has not reported since {since:%H:%M}: is a monitor running?"
            )
    waiting = (
        QueueSnapshot.objects.filter(name=settings.DEADLETTERS_QUEUE)
        .values_list("depth", "oldest_age")
        .first()
    )
    if waiting and waiting[0] and waiting[1] is not None and waiting[1] > limit:
        return (
            f"Dead letters are not being ingested: {waiting[0]:,} waiting in the broker, "
            f"the oldest for {waiting[1] / 60:.0f} min."
        )
    return ""
