"""The overview page's reads: the queues, the workers and the dead letters at a glance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from dashboard.models import QueueSnapshot, WorkerSnapshot
from dashboard.queues.selectors import Freshness, freshness
from deadletters.models import DeadLetter, DeadLetterGroup, DeadLetterGroupHour
from deadletters.selectors import Count, count_matching


@dataclass(frozen=True)
class TopGroup:
    signature: str
    count: int
    task_name: str
    exception_type: str


@dataclass(frozen=True)
class Overview:
    queues: int
    backlog: int | None
    worst_queue: str
    worst_age: float | None
    workers_online: int
    workers_seen_today: int
    dead_letters_last_hour: Count
    top_group: TopGroup | None
    broker: Freshness
    workers: Freshness


def overview(now: datetime | None = None) -> Overview:
    now = now or timezone.now()
    # Work waiting for Celery workers: the dead-letter queue is the monitor's.
    snapshots = list(
        QueueSnapshot.objects.exclude(name=settings.DEADLETTERS_QUEUE).values_list(
            "name", "depth", "oldest_age"
        )
    )
    depths = [depth for _, depth, _ in snapshots if depth is not None]
    aged = [(age, name) for name, _, age in snapshots if age is not None]
    worst_age, worst_queue = max(aged) if aged else (None, "")
    last_hour = DeadLetter.objects.filter(
        state=DeadLetter.State.OPEN, failed_at__gte=now - timedelta(hours=1)
    )
    return Overview(
        queues=len(snapshots),
        backlog=sum(depths) if depths else None,
        worst_queue=worst_queue,
        worst_age=worst_age,
        workers_online=WorkerSnapshot.objects.filter(online=True).count(),
        workers_seen_today=WorkerSnapshot.objects.filter(
            last_seen_at__gte=now - timedelta(days=1)
        ).count(),
        dead_letters_last_hour=count_matching(last_hour),
        top_group=_top_group(now),
        broker=freshness("broker", settings.MONITOR_BROKER_INTERVAL, now),
        workers=freshness("workers", settings.MONITOR_WORKERS_INTERVAL, now),
    )


def _top_group(now: datetime) -> TopGroup | None:
    """The group with the most failures in the last hour that still has open ones.

    From the hourly group counts kept at ingest: no grouping of the big table on
    a page that polls every five seconds.
    """
    since = (now - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    open_groups = DeadLetterGroup.objects.filter(open__gt=0).values("signature")
    row = (
        DeadLetterGroupHour.objects.filter(hour__gte=since, signature__in=open_groups)
        .values("signature")
        .annotate(n=Sum("count"))
        .order_by("-n")
        .first()
    )
    if row is None:
        return None
    group = DeadLetterGroup.objects.get(signature=row["signature"])
    return TopGroup(group.signature, int(row["n"]), group.task_name, group.exception_type)
