"""The overview page's reads: the state of the cluster at a glance, and why.

The page polls every five seconds, so everything here is bounded: the
snapshots the monitor keeps (one row per queue, worker, collector), the task
outcomes of the last hour by minute (``TaskMinute``, at most 61 rows per
aggregate), and of the dead letters only counters, the hourly group counts and
a capped count of the last hour's open rows on its index.

Every other page shows the state too, in the tab's title and icon
(``headline``): there it is cached for a few seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from dashboard.models import CollectorStatus, WorkerSnapshot
from dashboard.monitor.status import ingest_trouble
from dashboard.periodic.selectors import BeatState, beat_state
from dashboard.queues.selectors import Freshness, QueueRow, open_flags, queue_rows
from dashboard.tasks import selectors as tasks
from dashboard.templatetags.ops import percent
from deadletters.models import DeadLetter, DeadLetterGroup, DeadLetterGroupHour
from deadletters.selectors import Count, count_matching, open_total

HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"
# A tile with nothing to judge by (no outcomes reported, no beat in use).
UNKNOWN = "unknown"
# A task failing more often than this over the last FAILURE_WINDOW degrades the cluster.
FAILURE_RATIO = 0.05
FAILURE_WINDOW = timedelta(minutes=10)
# How many of each kind of reason the state names before it says "and N more".
NAMED = 3
BACKLOGS_SHOWN = 8
GROUPS_SHOWN = 5
# Where every page's title finds the state (Django's cache: per process by default).
HEADLINE_KEY = "ops:headline"


@dataclass(frozen=True)
class Reason:
    level: str
    text: str
    url: str = ""


@dataclass(frozen=True)
class State:
    level: str
    reasons: list[Reason]

    @property
    def word(self) -> str:
        return self.level.capitalize()


@dataclass(frozen=True)
class Headline:
    """What the tab's title and icon say on every page: "(35) Degraded"."""

    level: str
    open: int

    @property
    def word(self) -> str:
        return self.level.capitalize()

    @property
    def text(self) -> str:
        return f"({self.open}) {self.word}"


@dataclass(frozen=True)
class Verdict:
    """A tile's judgement, in a colour (``level``) and in words, never the colour alone."""

    level: str
    text: str


def time_to_drain(depth: int | None, in_rate: float | None, out_rate: float | None) -> float | None:
    """Seconds until a queue is empty at its current rates: 0 when it is,
    ``math.inf`` when it does not drain (as much or more comes in than goes
    out), None when the depth or the rates are not known."""
    if depth is None:
        return None
    if depth == 0:
        return 0.0
    if in_rate is None or out_rate is None:
        return None
    net = out_rate - in_rate
    return depth / net if net > 0 else math.inf


@dataclass(frozen=True)
class Backlog:
    queue: QueueRow
    drain: float | None

    @property
    def growing(self) -> bool:
        return _growth(self.queue) > 0

    @property
    def never_drains(self) -> bool:
        return self.drain is not None and math.isinf(self.drain)


@dataclass(frozen=True)
class TopGroup:
    signature: str
    count: int
    task_name: str
    exception_type: str
    open: int = 0


@dataclass
class Throughput:
    """The last hour of task outcomes, minute by minute, and the last ten minutes' rates."""

    series: tasks.Series
    succeeded_per_minute: float
    failed_per_minute: float
    wait_p95: float | None

    @property
    def failure_ratio(self) -> float | None:
        finished = self.succeeded_per_minute + self.failed_per_minute
        return self.failed_per_minute / finished if finished else None


@dataclass(frozen=True)
class Overview:
    state: State
    queues: int
    backlog: int | None
    worst_queue: str
    worst_age: float | None
    backlogs: list[Backlog]
    workers_online: int
    workers_seen_today: int
    throughput: Throughput
    dead_letters_last_hour: Count
    dead_letters_open: int
    grown_groups: list[TopGroup]
    broker: Freshness
    workers: Freshness
    failing_tasks: list[tasks.TaskFigures] = field(default_factory=list)
    # One verdict per tile: queues, workers, tasks, dead letters, periodic.
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    periodic_entries: int = 0
    beats_alive: int = 0

    @property
    def top_group(self) -> TopGroup | None:
        return self.grown_groups[0] if self.grown_groups else None

    @property
    def headline(self) -> Headline:
        return Headline(self.state.level, self.dead_letters_open)


@dataclass(frozen=True)
class Cluster:
    """What the state is judged from: the snapshots the monitor keeps, the last
    ten minutes of outcomes, beat, ingestion and the fleet checks."""

    now: datetime
    queues: list[QueueRow]
    broker: Freshness
    workers: Freshness
    # (hostname, online, last seen) of every worker seen in the last day.
    snapshots: list[tuple[str, bool, datetime]]
    recent: list[tasks.TaskFigures]
    failing: list[tasks.TaskFigures]
    beat: BeatState
    ingest_trouble: str
    flags: list[tuple[str, list[str]]]

    @property
    def online(self) -> int:
        return sum(1 for _, is_online, _ in self.snapshots if is_online)

    @property
    def offline(self) -> list[tuple[str, datetime]]:
        return [(host, seen) for host, is_online, seen in self.snapshots if not is_online]


def read_cluster(now: datetime | None = None) -> Cluster:
    now = now or timezone.now()
    # Work waiting for Celery workers: the dead-letter queue is the monitor's.
    rows = [row for row in queue_rows() if not row.is_dead_letter_queue]
    statuses = {
        status.name: status
        for status in CollectorStatus.objects.filter(name__in=("broker", "workers"))
    }
    recent = tasks.recent_figures(now - FAILURE_WINDOW, now)
    return Cluster(
        now=now,
        queues=rows,
        broker=Freshness(statuses.get("broker"), settings.MONITOR_BROKER_INTERVAL, now),
        workers=Freshness(statuses.get("workers"), settings.MONITOR_WORKERS_INTERVAL, now),
        snapshots=list(
            WorkerSnapshot.objects.filter(last_seen_at__gte=now - timedelta(days=1))
            .order_by("hostname")
            .values_list("hostname", "online", "last_seen_at")
        ),
        recent=recent,
        failing=sorted(
            (task for task in recent if (task.failure_ratio or 0) > FAILURE_RATIO),
            key=lambda task: (-(task.failure_ratio or 0), task.name),
        ),
        beat=beat_state(now),
        ingest_trouble=ingest_trouble(now),
        flags=open_flags(),
    )


def headline() -> Headline:
    """The state and the open dead letters, for the title and icon of every page.

    Judging the state reads several tables; every page of every operator asks,
    so it is cached for ``STATE_CACHE_SECONDS`` (the overview refreshes it on
    each poll).
    """
    cached = cache.get(HEADLINE_KEY)
    if not isinstance(cached, Headline):
        cached = Headline(_state(read_cluster()).level, open_total())
        cache.set(HEADLINE_KEY, cached, settings.STATE_CACHE_SECONDS)
    return cached


def overview(now: datetime | None = None) -> Overview:
    cluster = read_cluster(now)
    now, rows = cluster.now, cluster.queues
    depths = [row.depth for row in rows if row.depth is not None]
    aged = [(row.oldest_age, row.name) for row in rows if row.oldest_age is not None]
    worst_age, worst_queue = max(aged) if aged else (None, "")
    last_hour = DeadLetter.objects.filter(
        state=DeadLetter.State.OPEN, failed_at__gte=now - timedelta(hours=1)
    )
    state = _state(cluster)
    throughput = _throughput(now, cluster.recent)
    dead_letters_open = open_total()
    result = Overview(
        state=state,
        queues=len(rows),
        backlog=sum(depths) if depths else None,
        worst_queue=worst_queue,
        worst_age=worst_age,
        backlogs=_backlogs(rows),
        workers_online=cluster.online,
        workers_seen_today=len(cluster.snapshots),
        throughput=throughput,
        dead_letters_last_hour=count_matching(last_hour),
        dead_letters_open=dead_letters_open,
        grown_groups=_grown_groups(now),
        broker=cluster.broker,
        workers=cluster.workers,
        failing_tasks=cluster.failing,
        verdicts=_verdicts(cluster, throughput, dead_letters_open),
        periodic_entries=len(cluster.beat.entries),
        beats_alive=len(cluster.beat.alive),
    )
    # The overview has just judged the state: the other pages' titles use it.
    cache.set(HEADLINE_KEY, result.headline, settings.STATE_CACHE_SECONDS)
    return result


def _verdicts(
    cluster: Cluster, throughput: Throughput, dead_letters_open: int
) -> dict[str, Verdict]:
    """Each tile's colour and words: what an operator reads from across the room."""
    return {
        "queues": _queues_verdict(cluster),
        "workers": _workers_verdict(cluster),
        "tasks": _tasks_verdict(cluster, throughput),
        "dead_letters": _dead_letters_verdict(cluster, dead_letters_open),
        "periodic": _periodic_verdict(cluster.beat),
    }


def _counted(parts: list[tuple[int, str]]) -> str:
    return ", ".join(f"{n:,} {words}" for n, words in parts if n)


def _queues_verdict(cluster: Cluster) -> Verdict:
    if cluster.broker.failing_since is not None:
        return Verdict(FAILING, "broker unreachable: figures as last sampled")
    rows = cluster.queues
    trouble = _counted(
        [
            (sum(1 for row in rows if row.paused is not None), "paused"),
            (sum(1 for row in rows if row.missing_consumer), "without a consumer"),
            (sum(1 for row in rows if row.depth and _growth(row) > 0), "growing"),
        ]
    )
    if trouble:
        return Verdict(DEGRADED, f"needs a look: {trouble}")
    if cluster.broker.stale:
        return Verdict(DEGRADED, "not sampled lately")
    return Verdict(HEALTHY, "all consumed, none paused or growing")


def _workers_verdict(cluster: Cluster) -> Verdict:
    sampled = cluster.workers.status is not None and cluster.workers.status.last_success_at
    if sampled and not cluster.online:
        return Verdict(FAILING, "no worker online")
    checks = "configuration checks" if len(cluster.flags) > 1 else "configuration check"
    trouble = _counted(
        [(len(cluster.offline), "offline"), (len(cluster.flags), f"{checks} flagged")]
    )
    if trouble:
        return Verdict(DEGRADED, f"needs a look: {trouble}")
    if not sampled or cluster.workers.stale:
        return Verdict(DEGRADED, "not asked lately")
    return Verdict(HEALTHY, "all online, no check flagged")


def _tasks_verdict(cluster: Cluster, throughput: Throughput) -> Verdict:
    if cluster.failing:
        n = len(cluster.failing)
        return Verdict(DEGRADED, f"needs a look: {n} task{'s' if n != 1 else ''} fail over 5 %")
    if throughput.failure_ratio is None:
        return Verdict(UNKNOWN, "no outcomes reported")
    return Verdict(HEALTHY, "every task fails under 5 %")


def _dead_letters_verdict(cluster: Cluster, dead_letters_open: int) -> Verdict:
    if cluster.ingest_trouble:
        return Verdict(FAILING, "ingestion stuck: new failures wait in the broker")
    if dead_letters_open:
        return Verdict(FAILING, f"{dead_letters_open:,} open in all: needs a look")
    return Verdict(HEALTHY, "none open")


def _periodic_verdict(beat: BeatState) -> Verdict:
    if beat.down:
        return Verdict(FAILING, "beat is down: nothing is sent")
    if beat.duplicates:
        return Verdict(FAILING, f"needs a look: {len(beat.duplicates):,} sent by two beats")
    if beat.late:
        return Verdict(DEGRADED, f"needs a look: {len(beat.late):,} late")
    if not beat.entries:
        return Verdict(UNKNOWN, "no schedule reported")
    return Verdict(HEALTHY, "every entry on time")


def _state(cluster: Cluster) -> State:
    """Healthy, degraded or failing, with every reason, the worst first."""
    beat, broker, workers, queues = cluster.beat, cluster.broker, cluster.workers, cluster.queues
    reasons: list[Reason] = []
    paused = [row.paused for row in queues if row.paused is not None]

    def add(level: str, texts: list[tuple[str, str]], more: str) -> None:
        reasons.extend(Reason(level, text, url) for text, url in texts[:NAMED])
        if len(texts) > NAMED:
            reasons.append(Reason(level, more.format(n=len(texts) - NAMED)))

    queues_url, workers_url = reverse("queues"), reverse("workers")
    # Failing: work cannot flow, or failures are not being collected.
    if broker.failing_since is not None:
        since = timezone.localtime(broker.failing_since)
        add(FAILING, [(f"Broker unreachable since {since:%H:%M}.", queues_url)], "")
    if workers.status is not None and workers.status.last_success_at and not cluster.online:
        add(FAILING, [("No worker online.", workers_url)], "")
    if cluster.ingest_trouble:
        add(FAILING, [(cluster.ingest_trouble, reverse("deadletters:list"))], "")
    periodic_url = reverse("periodic")
    if beat.down:
        text = "Beat is down: no beat process reports, no periodic task is sent."
        add(FAILING, [(text, periodic_url)], "")
    duplicates = []
    for row in beat.duplicates:
        sends = row.entry.duplicate_sends
        counted = f" ({sends:,} duplicate sends)." if sends else "."
        text = f"{len(row.senders)} beat processes are sending {row.entry.name}: "
        duplicates.append((text + row.senders_text() + counted, periodic_url))
    add(FAILING, duplicates, "{n} more periodic entries are sent by two beats or more.")
    late = []
    for row in beat.late:
        due = timezone.localtime(row.entry.next_due)
        late.append((f"Periodic task {row.entry.name} is late: due {due:%H:%M:%S}, not sent.",
                     periodic_url))  # fmt: skip
    add(DEGRADED, late, "{n} more periodic entries are late.")
    # Degraded: work flows, but something needs a look.
    add(
        DEGRADED,
        [
            (
                f"{task.name or '(no name)'} failed {task.outcomes.failed:,} of"
                f" {task.outcomes.finished:,} runs ({percent(task.failure_ratio)})"
                f" in the last {FAILURE_WINDOW.seconds // 60} min.",
                task.get_absolute_url(window="15m"),
            )
            for task in cluster.failing
        ],
        "{n} more tasks fail more than 5 % of their runs.",
    )
    add(
        DEGRADED,
        [
            (
                f"Queue {row.name}: {row.depth:,} waiting"
                + (f", growing {growth:.1f}/s" if (growth := _growth(row)) > 0 else "")
                + ", and no worker consumes it.",
                queues_url,
            )
            for row in queues
            if row.missing_consumer and row.depth is not None
        ],
        "{n} more queues have no consumer.",
    )
    add(
        DEGRADED,
        [
            (f"Worker {host} offline since {timezone.localtime(seen):%H:%M}.", workers_url)
            for host, seen in cluster.offline
        ],
        "{n} more workers offline.",
    )
    add(
        DEGRADED,
        [
            (
                f"Queue {pause.queue} paused"
                + (f" by {pause.username}" if pause.username else "")
                + f" since {timezone.localtime(pause.paused_at):%H:%M}.",
                queues_url,
            )
            for pause in paused
        ],
        "{n} more queues paused.",
    )
    # Flagged fleet configuration checks, one reason per check (docs/hygiene.md).
    add(
        DEGRADED,
        [
            (
                f"{len(hosts)} worker{'s' if len(hosts) != 1 else ''} flagged: {problem} ("
                + ", ".join(hosts[:NAMED])
                + (f" and {len(hosts) - NAMED} more" if len(hosts) > NAMED else "")
                + ").",
                workers_url,
            )
            for problem, hosts in cluster.flags
        ],
        "{n} more configuration checks flagged.",
    )
    for name, fresh in (("Queues", broker), ("Workers", workers)):
        if fresh.failing_since is not None:
            continue  # said above
        if fresh.status is None or fresh.status.last_success_at is None:
            add(DEGRADED, [(f"{name} not sampled yet: is manage.py monitor running?", "")], "")
        elif fresh.stale:
            age = int(fresh.age or 0) // 60
            add(
                DEGRADED,
                [(f"{name} last sampled {age} min ago: is manage.py monitor running?", "")],
                "",
            )
    levels = {reason.level for reason in reasons}
    level = FAILING if FAILING in levels else DEGRADED if DEGRADED in levels else HEALTHY
    return State(level, reasons)


def _growth(row: QueueRow) -> float:
    """Messages per second the queue grows by (0 when it does not, or is not known to)."""
    if row.in_rate is None or row.out_rate is None:
        return 0.0
    return max(row.in_rate - row.out_rate, 0.0)


def _backlogs(rows: list[QueueRow]) -> list[Backlog]:
    """Queues with messages waiting: the growing first, then the deepest."""
    waiting = [
        Backlog(row, time_to_drain(row.depth, row.in_rate, row.out_rate))
        for row in rows
        if row.depth
    ]
    waiting.sort(key=lambda b: (not b.growing, -(b.queue.depth or 0), b.queue.name))
    return waiting[:BACKLOGS_SHOWN]


def _throughput(now: datetime, recent: list[tasks.TaskFigures]) -> Throughput:
    hour = tasks.series(tasks.WINDOWS["1h"], now=now)
    minutes = recent[0].minutes if recent else 1.0
    return Throughput(
        series=hour,
        succeeded_per_minute=sum(task.outcomes.succeeded for task in recent) / minutes,
        failed_per_minute=sum(task.outcomes.failed for task in recent) / minutes,
        wait_p95=tasks.totals(hour.points).wait_quantile(0.95),
    )


def _grown_groups(now: datetime) -> list[TopGroup]:
    """The groups with the most failures in the last hour that still have open ones.

    From the hourly group counts kept at ingest: no grouping of the big table on
    a page that polls every five seconds.
    """
    since = (now - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    open_groups = DeadLetterGroup.objects.filter(open__gt=0).values("signature")
    rows = list(
        DeadLetterGroupHour.objects.filter(hour__gte=since, signature__in=open_groups)
        .values("signature")
        .annotate(n=Sum("count"))
        .order_by("-n", "signature")[:GROUPS_SHOWN]
    )
    groups = DeadLetterGroup.objects.in_bulk([row["signature"] for row in rows])
    return [
        TopGroup(group.signature, int(row["n"]), group.task_name, group.exception_type, group.open)
        for row in rows
        if (group := groups.get(row["signature"])) is not None
    ]
