"""Reads for the queue and worker pages: stored snapshots only.

Nothing here talks to the broker or the workers; the monitor's samplers
(``dashboard.queues.sampling``) keep these tables fresh, and every page says how old
its data is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from dashboard.models import (
    BUCKET_COLUMNS,
    CheckSilence,
    CollectorStatus,
    QueueHistory,
    QueuePause,
    QueueSnapshot,
    TaskTotal,
    WorkerSnapshot,
)
from dashboard.queues.checks import RULES, Check, worker_checks
from dashboard.tasks.selectors import TaskFigures, queue_task_figures
from deadletters.selectors import Count, open_in_queue

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
    # None for a paused queue the monitor has not sampled yet.
    sampled_at: datetime | None
    consumers: list[str] = field(default_factory=list)
    paused: QueuePause | None = None
    # The monitor drains it: it never has a Celery worker as consumer.
    is_dead_letter_queue: bool = False
    # (seconds into the last hour, deepest sample) per history step.
    chart: list[tuple[float, int]] = field(default_factory=list)

    @property
    def growth(self) -> float:
        """Messages per second the queue grows by: 0 when it does not, or the rates
        are not known (as the overview's backlogs count it)."""
        if self.in_rate is None or self.out_rate is None:
            return 0.0
        return max(self.in_rate - self.out_rate, 0.0)

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


# --- one queue --------------------------------------------------------------------

DAY_WINDOW = timedelta(hours=24)
# The day's charts draw the deepest (and oldest) of each step: a day of one-minute
# history steps would be 1,440 points in a chart a few hundred pixels wide.
DAY_STEP = timedelta(minutes=15)


@dataclass(frozen=True)
class History:
    """A queue's depth and oldest-message age over a window, as the ``chart`` tag
    draws them: (seconds into the window, value) per point, oldest first."""

    span: float
    depth: list[tuple[float, int]]
    oldest_age: list[tuple[float, float]]


def queue_history(
    name: str, window: timedelta, *, step: timedelta | None = None, now: datetime | None = None
) -> History:
    """The stored history of ``name`` over the last ``window`` (one query on the
    queue's history index); with ``step``, the highest depth and age of each step."""
    now = now or timezone.now()
    start = now - window
    rows = (
        QueueHistory.objects.filter(queue=name, at__gte=start)
        .order_by("at")
        .values_list("at", "depth_max", "oldest_age")
    )
    size = step.total_seconds() if step else None
    depth: dict[float, int] = {}
    age: dict[float, float] = {}
    for at, deepest, oldest in rows:
        x = (at - start).total_seconds()
        if size:
            x -= x % size
        if deepest is not None:
            depth[x] = max(depth.get(x, deepest), deepest)
        if oldest is not None:
            age[x] = max(age.get(x, oldest), oldest)
    return History(window.total_seconds(), sorted(depth.items()), sorted(age.items()))


def queue_workers(name: str) -> list[WorkerSnapshot]:
    """The workers whose last report lists ``name`` among their queues, online first.

    Matched here, not in SQL: JSON containment is not portable (SQLite), and a
    fleet's queue lists are small.
    """
    rows = WorkerSnapshot.objects.only(
        "hostname", "online", "last_seen_at", "queues", "concurrency", "active_count"
    ).order_by("-online", "hostname")
    return [worker for worker in rows if name in (worker.queues or [])]


@dataclass
class QueuePage:
    queue: QueueRow
    workers: list[WorkerSnapshot]
    hour: History
    # The tasks that ran on it over the last hour, from the workers' outcome reports.
    tasks: list[TaskFigures]
    open_dead_letters: Count


def queue_page(name: str, now: datetime | None = None) -> QueuePage | None:
    """What the queue's page shows (and polls), or None for a queue nobody knows:
    never sampled and not paused. Bounded reads only: one queue's rows, the last
    hour of its history and outcomes, a capped count of its open dead letters."""
    now = now or timezone.now()
    snapshot = QueueSnapshot.objects.filter(name=name).first()
    pause = QueuePause.objects.filter(queue=name).first()
    if snapshot is None and pause is None:
        return None
    workers = queue_workers(name)
    consumers = {name: [worker.hostname for worker in workers if worker.online]}
    if snapshot is None:
        # Paused before the monitor's first round saw it: nothing is known yet.
        snapshot = QueueSnapshot(name=name, sources=["paused"])
    row = _row(snapshot, consumers, {name: pause} if pause else {})
    return QueuePage(
        queue=row,
        workers=workers,
        hour=queue_history(name, CHART_WINDOW, now=now),
        tasks=queue_task_figures(name, now=now),
        open_dead_letters=open_in_queue(name),
    )


# --- workers ----------------------------------------------------------------------


def workers() -> list[WorkerSnapshot]:
    return list(
        WorkerSnapshot.objects.defer("active", "reserved", "scheduled", "registered").order_by(
            "-online", "hostname"
        )
    )


def online_worker_names() -> list[str]:
    return list(WorkerSnapshot.objects.filter(online=True).values_list("hostname", flat=True))


# --- fleet configuration checks ---------------------------------------------------------

# The runtime histogram's +Inf bucket: runs longer than its last bound (10 s).
LONG_RUNS_COLUMN = BUCKET_COLUMNS["runtime"][-1]
# Up to this many workers are named in the long tasks' query; more read every row.
NAMED_HOSTS = 200


def long_tasks(hostnames: Collection[str] | None = None) -> dict[str, set[str]]:
    """Per worker, the tasks that ran longer than 10 s there (one query)."""
    rows = TaskTotal.objects.filter(**{f"{LONG_RUNS_COLUMN}__gt": 0})
    if hostnames is not None and len(hostnames) <= NAMED_HOSTS:
        rows = rows.filter(hostname__in=list(hostnames))
    found: dict[str, set[str]] = defaultdict(set)
    for hostname, task in rows.order_by().values_list("hostname", "task").distinct():
        found[hostname].add(task)
    return found


def fleet_checks(workers: Iterable[WorkerSnapshot]) -> dict[str, list[Check]]:
    """Every check of each worker, by hostname: two queries however many workers."""
    workers = list(workers)
    if not workers:
        return {}
    long = long_tasks([worker.hostname for worker in workers])
    # Silences are set by hand, one at a time: a small table, read whole.
    silences = list(CheckSilence.objects.order_by("id"))
    return {
        worker.hostname: worker_checks(
            worker, long_tasks=long.get(worker.hostname, set()), silences=silences
        )
        for worker in workers
    }


def open_flags() -> list[tuple[str, list[str]]]:
    """Per rule flagged somewhere (in ``RULES`` order), the online workers where it
    is flagged and not silenced: what the overview says."""
    online = WorkerSnapshot.objects.filter(online=True).only("hostname", "queues", "config")
    flagged: dict[str, list[str]] = defaultdict(list)
    for hostname, checks in sorted(fleet_checks(online).items()):
        for check in checks:
            if check.open:
                flagged[check.key].append(hostname)
    return [(rule.flagged_as, flagged[rule.key]) for rule in RULES if flagged.get(rule.key)]
