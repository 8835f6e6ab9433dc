"""Reads of task outcomes for the task pages and the overview.

Everything comes from the tables the monitor adds the hook's reports up in
(``dashboard.tasks.outcomes``): ``TaskMinute`` for windows it still holds,
``TaskHour`` beyond, ``TaskFailureMinute`` for the exceptions. Each read is
one aggregate over a bounded window, summed in the database: never a row per
task run, and never the dead-letter table.

Percentiles come from the histogram buckets (``OUTCOME_BUCKETS``, counted per
bucket, not cumulatively) with ``histogram_quantile``, as Prometheus would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db.models import Max, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone

from dashboard.models import (
    BUCKET_COLUMNS,
    OUTCOME_BUCKETS,
    QueueSnapshot,
    TaskFailureMinute,
    TaskHour,
    TaskMinute,
    TaskTotal,
)

# The counters a page shows, summed over a window (annotated as "n_<column>":
# an annotation may not take a field's name).
SUMMED = (
    "succeeded",
    "failed",
    "retried",
    "rejected",
    "revoked",
    *BUCKET_COLUMNS["runtime"],
    *BUCKET_COLUMNS["wait"],
    "runtime_sum",
    "wait_sum",
)
SUMS = {f"n_{column}": Sum(column) for column in SUMMED}


def histogram_quantile(
    q: float, counts: Sequence[int], bounds: Sequence[float] = OUTCOME_BUCKETS
) -> float | None:
    """The ``q``-quantile (0 to 1) of observations counted per bucket, or None
    when there are none.

    ``counts`` holds one count per bucket (not cumulative), the last one the
    +Inf bucket; ``bounds`` the finite upper bounds (inclusive). As Prometheus'
    ``histogram_quantile``: the rank is found in its bucket and interpolated
    linearly between the bucket's bounds, the first bucket starting at 0; a
    rank in the +Inf bucket answers the highest finite bound, which only says
    "at least that".
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q}")
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(bounds)} bounds need {len(bounds) + 1} counts, not {len(counts)}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, n in enumerate(counts):
        if n > 0 and below + n >= rank:
            if index == len(bounds):
                return float(bounds[-1])
            lower = float(bounds[index - 1]) if index else 0.0
            return lower + (bounds[index] - lower) * (rank - below) / n
        below += n
    return float(bounds[-1])  # q == 1 with trailing empty buckets cannot reach here


# --- windows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    key: str
    label: str
    span: timedelta
    # The width of a chart's point, and its name.
    step: timedelta
    step_label: str
    # Windows this short refresh themselves on the pages (cheap to read).
    polls: bool = False

    def start(self, now: datetime) -> datetime:
        """Where the window's figures begin: at the start of the minute (or of
        the hour, beyond what ``TaskMinute`` keeps) ``span`` ago."""
        begin = now - self.span
        if self.by_hour:
            return begin.replace(minute=0, second=0, microsecond=0)
        return begin.replace(second=0, microsecond=0)

    @property
    def by_hour(self) -> bool:
        """Beyond what ``TaskMinute`` keeps, the figures come from ``TaskHour``."""
        return self.span > timedelta(days=settings.OUTCOMES_MINUTES_DAYS)


WINDOWS = {
    window.key: window
    for window in (
        Window("15m", "15 min", timedelta(minutes=15), timedelta(minutes=1), "minute", True),
        Window("1h", "1 h", timedelta(hours=1), timedelta(minutes=1), "minute", True),
        Window("24h", "24 h", timedelta(hours=24), timedelta(minutes=15), "15 min"),
        Window("7d", "7 d", timedelta(days=7), timedelta(hours=1), "hour"),
    )
}
DEFAULT_WINDOW = WINDOWS["1h"]


def window_named(key: str | None) -> Window:
    """The window a request asks for; the default for anything else."""
    return WINDOWS.get(key or "", DEFAULT_WINDOW)


def _rows(window: Window, now: datetime) -> QuerySet[Any]:
    if window.by_hour:
        return TaskHour.objects.filter(hour__gte=window.start(now))
    return TaskMinute.objects.filter(minute__gte=window.start(now))


# --- what a window adds up to -------------------------------------------------------------


def _empty_buckets() -> list[int]:
    return [0] * (len(OUTCOME_BUCKETS) + 1)


@dataclass
class Outcomes:
    """Outcome counters and histograms added up over some rows: a task's window,
    one of its queues, one point of a chart."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0
    revoked: int = 0
    runtime: list[int] = field(default_factory=_empty_buckets)
    wait: list[int] = field(default_factory=_empty_buckets)
    runtime_sum: float = 0.0
    wait_sum: float = 0.0

    @classmethod
    def from_sums(cls, row: Mapping[str, Any]) -> Outcomes:
        """From a row annotated with ``SUMS`` (a missing or NULL sum is 0)."""

        def n(column: str) -> int:
            return int(row.get(f"n_{column}") or 0)

        return cls(
            succeeded=n("succeeded"),
            failed=n("failed"),
            retried=n("retried"),
            rejected=n("rejected"),
            revoked=n("revoked"),
            runtime=[n(column) for column in BUCKET_COLUMNS["runtime"]],
            wait=[n(column) for column in BUCKET_COLUMNS["wait"]],
            runtime_sum=float(row.get("n_runtime_sum") or 0.0),
            wait_sum=float(row.get("n_wait_sum") or 0.0),
        )

    def add(self, other: Outcomes) -> None:
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retried += other.retried
        self.rejected += other.rejected
        self.revoked += other.revoked
        self.runtime = [a + b for a, b in zip(self.runtime, other.runtime, strict=True)]
        self.wait = [a + b for a, b in zip(self.wait, other.wait, strict=True)]
        self.runtime_sum += other.runtime_sum
        self.wait_sum += other.wait_sum

    @property
    def finished(self) -> int:
        """Runs that ended for good: succeeded or failed (a retry runs again)."""
        return self.succeeded + self.failed

    @property
    def failure_ratio(self) -> float | None:
        return self.failed / self.finished if self.finished else None

    def runtime_quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.runtime)

    def wait_quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.wait)

    @property
    def runtime_mean(self) -> float | None:
        timed = sum(self.runtime)
        return self.runtime_sum / timed if timed else None


@dataclass
class TaskFigures:
    """One task (or one of its queues) over a window, as the tables show it.

    The percentiles are attributes so that django-tables2 sorts by them.
    """

    name: str
    outcomes: Outcomes
    minutes: float

    def get_absolute_url(self, window: str = "") -> str:
        """The task's page ('' for a name no URL can hold: an empty one)."""
        if not self.name:
            return ""
        url = reverse("task_detail", args=[self.name])
        return f"{url}?window={window}" if window else url

    @property
    def rate(self) -> float | None:
        """Finished runs per minute over the window; None when none finished."""
        return self.outcomes.finished / self.minutes if self.outcomes.finished else None

    @property
    def failure_ratio(self) -> float | None:
        return self.outcomes.failure_ratio

    @cached_property
    def runtime_p50(self) -> float | None:
        return self.outcomes.runtime_quantile(0.5)

    @cached_property
    def runtime_p95(self) -> float | None:
        return self.outcomes.runtime_quantile(0.95)

    @cached_property
    def runtime_p99(self) -> float | None:
        return self.outcomes.runtime_quantile(0.99)

    @cached_property
    def wait_p50(self) -> float | None:
        return self.outcomes.wait_quantile(0.5)

    @cached_property
    def wait_p95(self) -> float | None:
        return self.outcomes.wait_quantile(0.95)

    @cached_property
    def wait_p99(self) -> float | None:
        return self.outcomes.wait_quantile(0.99)


def _minutes(window: Window, now: datetime) -> float:
    return max((now - window.start(now)).total_seconds() / 60, 1.0)


def task_names() -> set[str]:
    """Every task the workers' totals know (since each worker was first heard of)."""
    return set(TaskTotal.objects.order_by().values_list("task", flat=True).distinct())


def task_figures(window: Window, now: datetime | None = None) -> list[TaskFigures]:
    """Every task seen, with its figures over ``window``: one aggregate, by task.

    A task that ran before the window but not in it is listed without figures.
    """
    now = now or timezone.now()
    minutes = _minutes(window, now)
    rows = _rows(window, now).order_by().values("task").annotate(**SUMS)
    figures = {
        row["task"]: TaskFigures(row["task"], Outcomes.from_sums(row), minutes) for row in rows
    }
    for name in task_names() - set(figures):
        figures[name] = TaskFigures(name, Outcomes(), minutes)
    return sorted(figures.values(), key=lambda f: f.name)


def queue_task_figures(
    queue: str, window: Window = DEFAULT_WINDOW, now: datetime | None = None, limit: int = 100
) -> list[TaskFigures]:
    """The tasks that ran on ``queue`` in ``window``, with their figures there, the
    busiest first (at most ``limit``): one aggregate, by task, over the window's rows."""
    now = now or timezone.now()
    minutes = _minutes(window, now)
    rows = _rows(window, now).filter(queue=queue).order_by().values("task").annotate(**SUMS)
    figures = [TaskFigures(row["task"], Outcomes.from_sums(row), minutes) for row in rows]
    figures.sort(key=lambda f: (-f.outcomes.finished, -f.outcomes.retried, f.name))
    return figures[:limit]


# --- one task -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    exception: str
    count: int
    last: datetime


@dataclass(frozen=True)
class QueueFigures:
    figures: TaskFigures
    # The queue's depth as last sampled, None when not known.
    depth: int | None


@dataclass(frozen=True)
class Point:
    """One step of a chart: where it ends (seconds into the window) and what it added up to."""

    at: float
    minutes: float
    outcomes: Outcomes


@dataclass
class Series:
    """A window cut in steps, oldest first, for the charts; the step still
    under way is left out (it would read as a sudden drop)."""

    span: float
    points: list[Point]

    @property
    def has_outcomes(self) -> bool:
        return any(p.outcomes.finished or p.outcomes.retried for p in self.points)

    def per_minute(self, counter: str) -> list[tuple[float, float]]:
        return [(p.at, getattr(p.outcomes, counter) / p.minutes) for p in self.points]

    def quantile(self, kind: str, q: float) -> list[tuple[float, float]]:
        """The ``kind`` (runtime, wait) quantile of each step that has observations."""
        found = [(p.at, histogram_quantile(q, getattr(p.outcomes, kind))) for p in self.points]
        return [(at, value) for at, value in found if value is not None]

    # For the templates, which cannot pass arguments.
    @property
    def per_minute_succeeded(self) -> list[tuple[float, float]]:
        return self.per_minute("succeeded")

    @property
    def per_minute_failed(self) -> list[tuple[float, float]]:
        return self.per_minute("failed")

    @property
    def per_minute_peak(self) -> float:
        """The top of the runs chart: the busiest step, succeeded or failed."""
        counts = [max(p.outcomes.succeeded, p.outcomes.failed) for p in self.points]
        return max((n / p.minutes for n, p in zip(counts, self.points, strict=True)), default=0.0)

    @property
    def runtime_p50(self) -> list[tuple[float, float]]:
        return self.quantile("runtime", 0.5)

    @property
    def runtime_p95(self) -> list[tuple[float, float]]:
        return self.quantile("runtime", 0.95)

    @property
    def wait_p95(self) -> list[tuple[float, float]]:
        return self.quantile("wait", 0.95)


def _floor(moment: datetime, step: timedelta) -> datetime:
    seconds = step.total_seconds()
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def series(window: Window, task: str | None = None, now: datetime | None = None) -> Series:
    """The steps of ``window`` (of one task, or of all), one aggregate by minute or hour."""
    now = now or timezone.now()
    end = _floor(now, window.step)
    start = end - window.span
    by_hour = window.step >= timedelta(hours=1) or window.by_hour
    model: Any = TaskHour if by_hour else TaskMinute
    column = "hour" if by_hour else "minute"
    rows = model.objects.filter(**{f"{column}__gte": start, f"{column}__lt": end})
    if task is not None:
        rows = rows.filter(task=task)
    step_seconds = window.step.total_seconds()
    count = int(window.span.total_seconds() // step_seconds)
    steps = [Outcomes() for _ in range(count)]
    for row in rows.order_by().values(column).annotate(**SUMS):
        index = int((row[column] - start).total_seconds() // step_seconds)
        if 0 <= index < count:
            steps[index].add(Outcomes.from_sums(row))
    return Series(
        span=window.span.total_seconds(),
        points=[
            Point(at=(i + 1) * step_seconds, minutes=step_seconds / 60, outcomes=outcomes)
            for i, outcomes in enumerate(steps)
        ],
    )


@dataclass
class TaskDetail:
    name: str
    window: Window
    figures: TaskFigures
    queues: list[QueueFigures]
    failures: list[Failure]
    # How far back the exceptions go: TaskFailureMinute is kept only so long.
    failures_since: datetime
    series: Series


def task_detail(name: str, window: Window, now: datetime | None = None) -> TaskDetail | None:
    """The task's figures over ``window``, by queue, its exceptions and its
    chart; None for a task no worker ever reported (within what is kept)."""
    now = now or timezone.now()
    minutes = _minutes(window, now)
    by_queue = {
        row["queue"]: Outcomes.from_sums(row)
        for row in _rows(window, now).filter(task=name).order_by().values("queue").annotate(**SUMS)
    }
    if not by_queue and not _known(name):
        return None
    total = Outcomes()
    for outcomes in by_queue.values():
        total.add(outcomes)
    queues = set(by_queue) | set(
        TaskTotal.objects.filter(task=name).values_list("queue", flat=True)
    )
    depths = dict(QueueSnapshot.objects.filter(name__in=queues).values_list("name", "depth"))
    kept_since = now - timedelta(days=settings.OUTCOMES_MINUTES_DAYS)
    failures_since = max(window.start(now), kept_since)
    failures = (
        TaskFailureMinute.objects.filter(task=name, minute__gte=failures_since)
        .order_by()
        .values("exception")
        .annotate(n=Sum("count"), last=Max("minute"))
        .order_by("-n", "exception")[:20]
    )
    return TaskDetail(
        name=name,
        window=window,
        figures=TaskFigures(name, total, minutes),
        queues=[
            QueueFigures(
                TaskFigures(queue, by_queue.get(queue, Outcomes()), minutes), depths.get(queue)
            )
            for queue in sorted(queues)
        ],
        failures=[Failure(row["exception"], int(row["n"]), row["last"]) for row in failures],
        failures_since=failures_since,
        series=series(window, task=name, now=now),
    )


def _known(name: str) -> bool:
    """Reported by a worker still remembered, or within what ``TaskHour`` keeps."""
    return (
        TaskTotal.objects.filter(task=name).exists() or TaskHour.objects.filter(task=name).exists()
    )


# --- the overview ---------------------------------------------------------------------------


def recent_figures(since: datetime, now: datetime | None = None) -> list[TaskFigures]:
    """Each task's runs since ``since`` (succeeded and failed only, the minute
    under way included): one aggregate by task over the minutes since then."""
    now = now or timezone.now()
    start = since.replace(second=0, microsecond=0)
    minutes = max((now - start).total_seconds() / 60, 1.0)
    rows = (
        TaskMinute.objects.filter(minute__gte=start)
        .order_by()
        .values("task")
        .annotate(n_succeeded=Sum("succeeded"), n_failed=Sum("failed"))
    )
    return [TaskFigures(row["task"], Outcomes.from_sums(row), minutes) for row in rows]


def totals(points: Iterable[Point]) -> Outcomes:
    total = Outcomes()
    for point in points:
        total.add(point.outcomes)
    return total
