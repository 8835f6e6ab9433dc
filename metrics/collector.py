"""The Prometheus metrics, computed at scrape time from what the monitor stored.

No inspect broadcast, no broker round trip and no count over the dead-letter
table: a handful of small reads of snapshots and counters. Because every web
process reads the same database, the figures agree under gunicorn with any
number of workers, and counters stay monotonic across restarts and pruning.

Names and labels are celery-exporter's wherever it has the series, so that
celery-mixin's dashboards and alerts work unchanged (tests/test_celery_mixin.py
proves it against a real Prometheus); our own series use the same label names:
``name`` (task), ``hostname`` (worker), ``queue_name``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.db.models import BigIntegerField, Sum
from django.db.models.functions import Cast
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dashboard.models import (
    BUCKET_COLUMNS,
    OUTCOME_BUCKETS,
    OUTCOME_EVENTS,
    CollectorStatus,
    QueueSnapshot,
    TaskFailureTotal,
    TaskTotal,
    WorkerSnapshot,
)
from dashboard.periodic.selectors import beat_state
from dashboard.queues.selectors import fleet_checks
from deadletters.models import DeadLetterStats

# A collector whose last success is older than this many of its intervals is
# reported as failing by celery_ops_broker_up.
STALE_AFTER_INTERVALS = 3
# With METRICS_PER_WORKER off, every worker's figures are summed under this
# hostname, so that pods with churning names do not each make new series.
ALL_WORKERS = "all"

# celery_task_<event>_total, counted by the hook in every process.
TASK_COUNTERS = {
    "sent": "Tasks published by processes that import the hook.",
    "received": "Tasks a worker received.",
    "started": "Task runs started.",
    "succeeded": "Task runs that succeeded.",
    "failed": "Task runs that failed for good, by exception type.",
    "retried": "Task runs that ended in a retry.",
    "rejected": "Task messages a worker rejected.",
    "revoked": "Tasks revoked before they ran.",
}
TASK_HISTOGRAMS = {
    "runtime": ("celery_task_runtime", "Seconds each task run took."),
    "wait": (
        "celery_task_queue_wait_time",
        "Seconds from a task's publish to its start, less any eta or countdown.",
    ),
}
# The columns of TaskTotal a scrape reads, in this order after the three keys.
TASK_COLUMNS = (
    *OUTCOME_EVENTS,
    *(column for kind in TASK_HISTOGRAMS for column in (*BUCKET_COLUMNS[kind], f"{kind}_sum")),
)
BUCKET_BOUNDS = (*map(floatToGoString, OUTCOME_BUCKETS), "+Inf")
# The queue gauges, in the order of _queue_rows()'s values.
QUEUE_GAUGES = (
    ("celery_queue_length", "Messages waiting in the queue, all priorities."),
    (
        "celery_queue_oldest_message_age_seconds",
        "Age of the oldest waiting message at the last sample, from its x_sent_at stamp;"
        " absent when unknown.",
    ),
    ("celery_active_consumer_count", "Consumers of the queue."),
)


class StoredStateCollector(Collector):
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or timezone.now()

    def collect(self) -> Iterator[Metric]:
        yield from self._small_families()
        yield from self._queues()
        yield from self._tasks()

    def render(self) -> bytes:
        """The text format of ``collect()``, byte for byte, faster.

        The task and queue series are most of a scrape (some 48,000 lines for
        1,000 queues and 500 task names on two workers each): they are written
        straight from their rows, not built as metric families and formatted by
        ``generate_latest``, which took four fifths of the time
        (docs/benchmarks.md). The rest goes the usual way.
        """
        head = generate_latest(_Families(self._small_families()))
        return head + (self._queues_text() + self._task_text()).encode()

    def _small_families(self) -> Iterator[Metric]:
        yield from self._workers()
        yield from self._config_checks()
        yield from self._dead_letters()
        yield from self._periodic()
        yield from self._ops()

    def _queue_rows(self) -> list[tuple[str, int | None, float | None, int]]:
        """(name, depth, oldest age, consumers) of every queue the broker has."""
        consuming: dict[str, int] = defaultdict(int)
        for queues in WorkerSnapshot.objects.filter(online=True).values_list("queues", flat=True):
            for name in queues or []:
                consuming[name] += 1
        # Tuples, not model instances: a thousand queues are most of a scrape.
        rows = QueueSnapshot.objects.filter(exists=True).values_list(
            "name", "depth", "oldest_age", "broker_consumers"
        )
        return [
            (name, depth, age, consumers if consumers is not None else consuming[name])
            for name, depth, age, consumers in rows
        ]

    def _queues(self) -> Iterator[Metric]:
        families = [
            GaugeMetricFamily(name, text, labels=["queue_name"]) for name, text in QUEUE_GAUGES
        ]
        for row in self._queue_rows():
            for family, value in zip(families, row[1:], strict=True):
                if value is not None:
                    family.add_metric([row[0]], value)
        yield from families

    def _queues_text(self) -> str:
        """``_queues()`` in the text format, as ``generate_latest`` writes it."""
        rows = [(f'{{queue_name="{_escape(row[0])}"}} ', row[1:]) for row in self._queue_rows()]
        out: list[str] = []
        for index, (name, text) in enumerate(QUEUE_GAUGES):
            out.append(_header(name, "gauge", text))
            out += [
                f"{name}{labels}{_number(value)}\n"
                for labels, values in rows
                if (value := values[index]) is not None
            ]
        return "".join(out)

    def _workers(self) -> Iterator[Metric]:
        rows = list(
            WorkerSnapshot.objects.values_list("hostname", "online", "active_count",
                                               "reserved_count")
        )  # fmt: skip
        yield GaugeMetricFamily(
            "celery_workers_online",
            "Workers that answered within the offline grace period.",
            value=sum(1 for _, online, _, _ in rows if online),
        )
        up = GaugeMetricFamily(
            "celery_worker_up", "1 if the worker answers, else 0 (summed: workers answering).",
            labels=["hostname"],
        )  # fmt: skip
        active = GaugeMetricFamily(
            "celery_worker_tasks_active", "Tasks the worker is executing.", labels=["hostname"],
        )  # fmt: skip
        reserved = GaugeMetricFamily(
            "celery_worker_reserved_tasks", "Tasks the worker has prefetched.",
            labels=["hostname"],
        )  # fmt: skip
        if settings.METRICS_PER_WORKER:
            # Forgotten workers are deleted by the sampler, so their series go with them.
            for hostname, online, active_count, reserved_count in rows:
                up.add_metric([hostname], 1 if online else 0)
                if online:
                    active.add_metric([hostname], active_count)
                    reserved.add_metric([hostname], reserved_count)
        elif rows:
            # Summed: "up" is then the number of workers that answer.
            answering = [row for row in rows if row[1]]
            up.add_metric([ALL_WORKERS], len(answering))
            active.add_metric([ALL_WORKERS], sum(row[2] for row in answering))
            reserved.add_metric([ALL_WORKERS], sum(row[3] for row in answering))
        yield from (up, active, reserved)

    def _config_checks(self) -> Iterator[Metric]:
        """The fleet configuration checks of the online workers (docs/hygiene.md):
        1 flagged, 0 passed or silenced, no series where not reported."""
        check = GaugeMetricFamily(
            "celery_worker_config_check",
            "1 if the worker's configuration check is flagged and not silenced, else 0.",
            labels=["hostname", "check"],
        )
        online = WorkerSnapshot.objects.filter(online=True).only("hostname", "queues", "config")
        flagged: dict[str, int] = {}
        for hostname, checks in sorted(fleet_checks(online).items()):
            for result in checks:
                if result.unknown:
                    continue
                if settings.METRICS_PER_WORKER:
                    check.add_metric([hostname, result.key], 1 if result.open else 0)
                else:
                    flagged[result.key] = flagged.get(result.key, 0) + result.open
        # Summed: the number of workers each check flags.
        for key, count in flagged.items():
            check.add_metric([ALL_WORKERS, key], count)
        yield check

    def _tasks(self) -> Iterator[Metric]:
        """celery-exporter's task counters and histograms, from the totals the
        monitor adds the hook's reports up into (one row per task, queue and worker)."""
        labels = ["name", "hostname", "queue_name"]
        counters = {
            event: CounterMetricFamily(f"celery_task_{event}", text, labels=labels)
            for event, text in TASK_COUNTERS.items()
        }
        counters["failed"] = CounterMetricFamily(
            "celery_task_failed", TASK_COUNTERS["failed"],
            labels=["name", "hostname", "exception", "queue_name"],
        )  # fmt: skip
        histograms = {
            kind: HistogramMetricFamily(name, text, labels=labels)
            for kind, (name, text) in TASK_HISTOGRAMS.items()
        }
        # Totals first, failures by exception second: a report folded in
        # between can only raise the second, so the unclassified remainder
        # below may lag for a scrape but never goes backwards.
        rows, failure_rows = self._task_totals()
        classified: dict[tuple[str, str, str], int] = defaultdict(int)
        for task, queue, hostname, exception, count in failure_rows:
            if not exception:
                continue  # one series with exception="" below, whatever the rows say
            counters["failed"].add_metric([task, hostname, exception, queue], count)
            classified[(task, queue, hostname)] += count
        events = len(OUTCOME_EVENTS)
        width = len(BUCKET_BOUNDS) + 1  # the buckets and the sum
        for task, queue, hostname, *values in rows:
            for index, event in enumerate(OUTCOME_EVENTS):
                if event != "failed":
                    counters[event].add_metric([task, hostname, queue], values[index])
            # Failures with no exception type, and a zero for every task as
            # celery-exporter has, so that a success ratio always has its divisor.
            failed = values[OUTCOME_EVENTS.index("failed")]
            unclassified = max(0, failed - classified[(task, queue, hostname)])
            counters["failed"].add_metric([task, hostname, "", queue], unclassified)
            for offset, histogram in enumerate(histograms.values()):
                start = events + offset * width
                *per_bucket, total = values[start : start + width]
                # Stored per bucket; a Prometheus bucket counts everything up to its bound.
                buckets = list(zip(BUCKET_BOUNDS, accumulate(per_bucket), strict=True))
                histogram.add_metric([task, hostname, queue], buckets, total)
        yield from counters.values()
        yield from histograms.values()

    def _task_text(self) -> str:
        """``_tasks()`` in the text format, as ``generate_latest`` writes it
        (labels sorted by name, values through ``floatToGoString``)."""
        rows, failure_rows = self._task_totals()
        heads = [f'hostname="{_escape(hostname)}",' for _, _, hostname, *_ in rows]
        tails = [
            f'name="{_escape(task)}",queue_name="{_escape(queue)}"' for task, queue, *_ in rows
        ]
        classified: dict[tuple[str, str, str], int] = defaultdict(int)
        failed = []
        for task, queue, hostname, exception, count in failure_rows:
            if not exception:
                continue
            failed.append(
                f'celery_task_failed_total{{exception="{_escape(exception)}",'
                f'hostname="{_escape(hostname)}",name="{_escape(task)}",'
                f'queue_name="{_escape(queue)}"}} {_number(count)}\n'
            )
            classified[(task, queue, hostname)] += count
        out: list[str] = []
        for index, event in enumerate(OUTCOME_EVENTS, start=3):
            name = f"celery_task_{event}_total"
            out.append(_header(name, "counter", TASK_COUNTERS[event]))
            if event != "failed":
                for head, tail, row in zip(heads, tails, rows, strict=True):
                    out.append(f"{name}{{{head}{tail}}} {_number(row[index])}\n")
                continue
            out += failed
            for head, tail, row in zip(heads, tails, rows, strict=True):
                rest = max(0, row[index] - classified[(row[0], row[1], row[2])])
                out.append(f'{name}{{exception="",{head}{tail}}} {_number(rest)}\n')
        width = len(BUCKET_BOUNDS) + 1
        for offset, (name, text) in enumerate(TASK_HISTOGRAMS.values()):
            out.append(_header(name, "histogram", text))
            start = 3 + len(OUTCOME_EVENTS) + offset * width
            for head, tail, row in zip(heads, tails, rows, strict=True):
                *per_bucket, total = row[start : start + width]
                count = 0
                for bound, n in zip(BUCKET_BOUNDS, per_bucket, strict=True):
                    count += n
                    out.append(f'{name}_bucket{{{head}le="{bound}",{tail}}} {_number(count)}\n')
                out.append(f"{name}_count{{{head}{tail}}} {_number(count)}\n")
                out.append(f"{name}_sum{{{head}{tail}}} {_number(total)}\n")
        return "".join(out)

    def _task_totals(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Rows of (task, queue, hostname, *TASK_COLUMNS) and of (task, queue,
        hostname, exception, count): per worker, or summed over the workers."""
        if settings.METRICS_PER_WORKER:
            totals = TaskTotal.objects.order_by("task", "queue", "hostname").values_list(
                "task", "queue", "hostname", *TASK_COLUMNS
            )
            failures = TaskFailureTotal.objects.order_by(
                "task", "queue", "hostname", "exception"
            ).values_list("task", "queue", "hostname", "exception", "count")
            return list(totals), list(failures)
        # Summed in the database. Cast: PostgreSQL's sum of bigints is a numeric.
        sums = {
            f"sum_{column}": Sum(column)
            if column.endswith("_sum")
            else Cast(Sum(column), BigIntegerField())
            for column in TASK_COLUMNS
        }
        summed = (
            TaskTotal.objects.order_by("task", "queue")
            .values("task", "queue")
            .annotate(**sums)
            .values_list("task", "queue", *sums)
        )
        failed = (
            TaskFailureTotal.objects.order_by("task", "queue", "exception")
            .values("task", "queue", "exception")
            .annotate(total=Cast(Sum("count"), BigIntegerField()))
            .values_list("task", "queue", "exception", "total")
        )
        return (
            [(task, queue, ALL_WORKERS, *values) for task, queue, *values in summed],
            [(task, queue, ALL_WORKERS, exc, n) for task, queue, exc, n in failed],
        )

    def _dead_letters(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily(
            "celery_deadletters_open", "Dead letters waiting for a decision.",
            labels=["name", "queue_name"],
        )  # fmt: skip
        received = CounterMetricFamily(
            "celery_deadletters_received", "Dead letters stored.", labels=["name", "queue_name"]
        )
        requeued = CounterMetricFamily(
            "celery_deadletters_requeued", "Dead letters requeued.", labels=["name"]
        )
        discarded = CounterMetricFamily(
            "celery_deadletters_discarded", "Dead letters discarded.", labels=["name"]
        )
        per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        rows = DeadLetterStats.objects.order_by("task_name", "queue").values_list(
            "task_name", "queue", "open", "received_total", "requeued_total", "discarded_total"
        )
        for task, queue, open_count, received_total, requeued_total, discarded_total in rows:
            open_.add_metric([task, queue], max(open_count, 0))
            received.add_metric([task, queue], received_total)
            per_task[task][0] += requeued_total
            per_task[task][1] += discarded_total
        for task, (requeued_total, discarded_total) in sorted(per_task.items()):
            requeued.add_metric([task], requeued_total)
            discarded.add_metric([task], discarded_total)
        yield from (open_, received, requeued, discarded)

    def _periodic(self) -> Iterator[Metric]:
        """Beat supervision, from one read of what the beat processes reported."""
        state = beat_state(self.now)
        yield GaugeMetricFamily(
            "celery_beat_instances",
            "Beat processes seen alive; more than 1 sends every scheduled task more than once.",
            value=len(state.alive),
        )
        last_sent = GaugeMetricFamily(
            "celery_periodic_task_last_sent_timestamp_seconds",
            "When a beat process last sent the entry's task (Unix time).",
            labels=["entry", "task"],
        )
        late = GaugeMetricFamily(
            "celery_periodic_task_late",
            "1 while the entry's next run is overdue and nothing was sent, else 0.",
            labels=["entry"],
        )
        # Exposed as ..._total: prometheus-client appends the suffix to counters.
        duplicates = CounterMetricFamily(
            "celery_periodic_task_duplicate_sends",
            "Sends of the entry by a second beat process while another one sent it too.",
            labels=["entry"],
        )
        for row in state.entries:
            entry = row.entry
            if entry.last_sent_at is not None:
                last_sent.add_metric([entry.name, entry.task], entry.last_sent_at.timestamp())
            # Every enabled entry has a series, 0 or 1, so that "no beat while
            # entries are known" can be told from "nothing scheduled at all".
            if entry.enabled:
                late.add_metric([entry.name], 1 if row.late else 0)
            # A 0 for every entry, so that increase() sees the first duplicate.
            duplicates.add_metric([entry.name], entry.duplicate_sends)
        yield from (last_sent, late, duplicates)

    def _ops(self) -> Iterator[Metric]:
        statuses = {status.name: status for status in CollectorStatus.objects.all()}
        last = GaugeMetricFamily(
            "celery_ops_collector_last_success_timestamp_seconds",
            "When each of the monitor's collectors last succeeded (Unix time).",
            labels=["collector"],
        )
        for name, status in sorted(statuses.items()):
            if status.last_success_at is not None:
                last.add_metric([name], status.last_success_at.timestamp())
        yield last
        broker = statuses.get("broker")
        fresh = (
            broker is not None
            and not broker.is_failing
            and broker.last_success_at is not None
            and (self.now - broker.last_success_at).total_seconds()
            <= STALE_AFTER_INTERVALS * settings.MONITOR_BROKER_INTERVAL
        )
        yield GaugeMetricFamily(
            "celery_ops_broker_up",
            "1 if the monitor reached the broker on its last sample, and recently; else 0.",
            value=1 if fresh else 0,
        )
        lag = GaugeMetricFamily(
            "celery_ops_ingest_lag_seconds",
            "Age of the oldest dead letter waiting in the broker to be ingested (0 when none).",
        )
        waiting = QueueSnapshot.objects.filter(name=settings.DEADLETTERS_QUEUE).first()
        if waiting is not None and waiting.depth is not None:
            if waiting.depth == 0:
                lag.add_metric([], 0)
            elif waiting.oldest_age is not None:
                lag.add_metric([], waiting.oldest_age)
        yield lag


class _Families(Collector):
    """A collector of families already made, for ``generate_latest``."""

    def __init__(self, families: Iterator[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return self.families


def _number(value: float) -> str:
    """``floatToGoString(value)``: the same text, at once for the counts that
    most samples are (Go's format has an exponent from a million up)."""
    if type(value) is int and 0 <= value < 1_000_000:
        return f"{value}.0"
    return floatToGoString(value)


def _escape(value: str) -> str:
    """A label value as the text format writes it (prometheus-client's escaping)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _header(name: str, kind: str, text: str) -> str:
    help_text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
