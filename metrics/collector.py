"""The Prometheus metrics, computed at scrape time from what the monitor stored.

No inspect broadcast, no broker round trip and no count over the dead-letter
table: a handful of small reads of snapshots and counters. Because every web
process reads the same database, the figures agree under gunicorn with any
number of workers, and counters stay monotonic across restarts and pruning.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dashboard.models import CollectorStatus, QueueSnapshot, WorkerSnapshot
from deadletters.models import DeadLetterStats

# A collector whose last success is older than this many of its intervals is
# reported as failing by celery_ops_broker_up.
STALE_AFTER_INTERVALS = 3


class StoredStateCollector(Collector):
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or timezone.now()

    def collect(self) -> Iterator[Metric]:
        yield from self._queues()
        yield from self._workers()
        yield from self._dead_letters()
        yield from self._ops()

    def _queues(self) -> Iterator[Metric]:
        length = GaugeMetricFamily(
            "celery_queue_length",
            "Messages waiting in the queue, all priorities.",
            labels=["queue"],
        )
        age = GaugeMetricFamily(
            "celery_queue_oldest_message_age_seconds",
            "Age of the oldest waiting message at the last sample, from its x_sent_at stamp;"
            " absent when unknown.",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "celery_queue_consumers", "Consumers of the queue.", labels=["queue"]
        )
        consuming: dict[str, int] = defaultdict(int)
        for queues in WorkerSnapshot.objects.filter(online=True).values_list("queues", flat=True):
            for name in queues or []:
                consuming[name] += 1
        # Tuples, not model instances: a thousand queues are most of a scrape.
        rows = QueueSnapshot.objects.filter(exists=True).values_list(
            "name", "depth", "oldest_age", "broker_consumers"
        )
        for name, depth, oldest_age, broker_consumers in rows:
            if depth is not None:
                length.add_metric([name], depth)
            if oldest_age is not None:
                age.add_metric([name], oldest_age)
            known = broker_consumers if broker_consumers is not None else consuming[name]
            consumers.add_metric([name], known)
        yield from (length, age, consumers)

    def _workers(self) -> Iterator[Metric]:
        workers = list(
            WorkerSnapshot.objects.only("hostname", "online", "active_count", "reserved_count")
        )
        yield GaugeMetricFamily(
            "celery_workers_online",
            "Workers that answered within the offline grace period.",
            value=sum(1 for w in workers if w.online),
        )
        if not settings.METRICS_PER_WORKER:
            return
        up = GaugeMetricFamily("celery_worker_up", "1 if the worker answers, else 0.",
                               labels=["worker"])  # fmt: skip
        active = GaugeMetricFamily(
            "celery_worker_active_tasks", "Tasks the worker is executing.", labels=["worker"]
        )
        reserved = GaugeMetricFamily(
            "celery_worker_reserved_tasks", "Tasks the worker has prefetched.", labels=["worker"]
        )
        # Forgotten workers are deleted by the sampler, so their series go with them.
        for worker in workers:
            up.add_metric([worker.hostname], 1 if worker.online else 0)
            if worker.online:
                active.add_metric([worker.hostname], worker.active_count)
                reserved.add_metric([worker.hostname], worker.reserved_count)
        yield from (up, active, reserved)

    def _dead_letters(self) -> Iterator[Metric]:
        open_ = GaugeMetricFamily(
            "celery_deadletters_open", "Dead letters waiting for a decision.",
            labels=["task", "queue"],
        )  # fmt: skip
        received = CounterMetricFamily(
            "celery_deadletters_received", "Dead letters stored.", labels=["task", "queue"]
        )
        requeued = CounterMetricFamily(
            "celery_deadletters_requeued", "Dead letters requeued.", labels=["task"]
        )
        discarded = CounterMetricFamily(
            "celery_deadletters_discarded", "Dead letters discarded.", labels=["task"]
        )
        per_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for stats in DeadLetterStats.objects.all():
            open_.add_metric([stats.task_name, stats.queue], max(stats.open, 0))
            received.add_metric([stats.task_name, stats.queue], stats.received_total)
            per_task[stats.task_name][0] += stats.requeued_total
            per_task[stats.task_name][1] += stats.discarded_total
        for task, (requeued_total, discarded_total) in sorted(per_task.items()):
            requeued.add_metric([task], requeued_total)
            discarded.add_metric([task], discarded_total)
        yield from (open_, received, requeued, discarded)

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
