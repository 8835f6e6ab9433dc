"""Reads for the queue, worker and overview pages: stored snapshots only.

Nothing here talks to the broker or the workers; the monitor's samplers
(``dashboard.sampling``) keep these tables fresh, and every page says how old
its data is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from dashboard.models import (
    CollectorStatus,
    QueueHistory,
    QueuePause,
    QueueSnapshot,
    WorkerSnapshot,
)
from deadletters.models import DeadLetter, DeadLetterGroup, DeadLetterGroupHour
from deadletters.selectors import Count, count_matching

CHART_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Freshness:
    """How old a collector's data is, for the line under each page's title."""

    status: CollectorStatus | None
    interval: float
    now: datetime

    @property
    def age(self) -> float | None:
        return None if self.status is None else self.status.age_seconds(self.now)

    @property
    def stale(self) -> bool:
        # Three missed rounds: the monitor is stopped, stuck, or failing.
        return self.age is None or self.age > 3 * self.interval

    @property
    def failing_since(self) -> datetime | None:
        return None if self.status is None else self.status.failing_since


def freshness(name: str, interval: float, now: datetime | None = None) -> Freshness:
    status = CollectorStatus.objects.filter(name=name).first()
    return Freshness(status, interval, now or timezone.now())


def broker_freshness() -> Freshness:
    return freshness("broker", settings.MONITOR_BROKER_INTERVAL)


def workers_freshness() -> Freshness:
    return freshness("workers", settings.MONITOR_WORKERS_INTERVAL)


# --- queues -----------------------------------------------------------------------


@dataclass
class QueueRow:
    name: str
    exists: bool
    depth: int | None
    ready: int | None
    unacked: int | None
    broker_consumers: int | None
    oldest_age: float | None
    in_rate: float | None
    out_rate: float | None
    sources: list[str]
    sampled_at: datetime
    consumers: list[str] = field(default_factory=list)
    paused: QueuePause | None = None
    # The monitor drains it: it never has a Celery worker as consumer.
    is_dead_letter_queue: bool = False
    # (seconds into the last hour, deepest sample) per history step.
    chart: list[tuple[float, int]] = field(default_factory=list)

    @property
    def missing_consumer(self) -> bool:
        """Messages wait and nobody (that we know of) consumes them, unintended."""
        return (
            bool(self.depth)
            and not self.consumers
            and not self.broker_consumers
            and not self.is_dead_letter_queue
            and self.paused is None
        )


def consumers_by_queue() -> dict[str, list[str]]:
    """Online workers per queue, from their last reported ``active_queues``."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for hostname, queues in WorkerSnapshot.objects.filter(online=True).values_list(
        "hostname", "queues"
    ):
        for queue in queues or []:
            consumers[queue].append(hostname)
    return consumers


def _row(
    snapshot: QueueSnapshot, consumers: dict[str, list[str]], pauses: dict[str, QueuePause]
) -> QueueRow:
    return QueueRow(
        name=snapshot.name,
        exists=snapshot.exists,
        depth=snapshot.depth,
        ready=snapshot.ready,
        unacked=snapshot.unacked,
        broker_consumers=snapshot.broker_consumers,
        oldest_age=snapshot.oldest_age,
        in_rate=snapshot.in_rate,
        out_rate=snapshot.out_rate,
        sources=list(snapshot.sources or []),
        sampled_at=snapshot.sampled_at,
        consumers=sorted(consumers.get(snapshot.name, [])),
        paused=pauses.get(snapshot.name),
        is_dead_letter_queue=snapshot.name == settings.DEADLETTERS_QUEUE,
    )


def queue_rows() -> list[QueueRow]:
    consumers = consumers_by_queue()
    pauses = {pause.queue: pause for pause in QueuePause.objects.all()}
    return [_row(s, consumers, pauses) for s in QueueSnapshot.objects.order_by("name")]


def queue_row(name: str) -> QueueRow | None:
    snapshot = QueueSnapshot.objects.filter(name=name).first()
    if snapshot is None:
        return None
    pauses = {pause.queue: pause for pause in QueuePause.objects.filter(queue=name)}
    return _row(snapshot, consumers_by_queue(), pauses)


def attach_charts(rows: list[QueueRow], now: datetime | None = None) -> None:
    """The last hour of each row's history, in one query for the rows shown."""
    now = now or timezone.now()
    start = now - CHART_WINDOW
    points: dict[str, list[tuple[float, int]]] = defaultdict(list)
    history = (
        QueueHistory.objects.filter(queue__in=[row.name for row in rows], at__gte=start)
        .order_by("queue", "at")
        .values_list("queue", "at", "depth_max")
    )
    for queue, at, depth in history:
        if depth is not None:
            points[queue].append(((at - start).total_seconds(), depth))
    for row in rows:
        row.chart = points.get(row.name, [])


# --- workers ----------------------------------------------------------------------


def workers() -> list[WorkerSnapshot]:
    return list(
        WorkerSnapshot.objects.defer("active", "reserved", "scheduled", "registered").order_by(
            "-online", "hostname"
        )
    )


def online_worker_names() -> list[str]:
    return list(WorkerSnapshot.objects.filter(online=True).values_list("hostname", flat=True))


# --- the overview -----------------------------------------------------------------


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
