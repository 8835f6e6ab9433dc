"""The monitor's samplers: the broker every few seconds, the workers every ten.

Each round stores the latest snapshot (``QueueSnapshot``, ``WorkerSnapshot``)
and the queue history, and reports to ``CollectorStatus`` ("broker",
"workers"), so that pages can say how old their data is and since when a
source is unreachable. Nothing here runs on the request path.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from kombu import Connection

from dashboard.broker import BROKER_ERRORS, BrokerUnavailable, control
from dashboard.broker.depths import DepthError, DepthReader, QueueDepth, is_plumbing, open_reader
from dashboard.models import QueueHistory, QueuePause, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.status import record_failure, record_success
from dashboard.queues.checks import clean_config

logger = logging.getLogger("dashboard.monitor")
_N = TypeVar("_N", int, float)

BROKER_COLLECTOR = "broker"
WORKERS_COLLECTOR = "workers"
# Listing the broker's bindings scans its keyspace, and the dead letters'
# queues change rarely: both are refreshed this often, not every round.
DISCOVER_EVERY_SECONDS = 60.0
# A round stops at as many replies as workers are known; every so often one
# waits for everyone instead, to find workers started since.
DISCOVER_WORKERS_EVERY_ROUNDS = 6

SOURCE_CONFIGURED = "configured"
SOURCE_WORKERS = "workers"
SOURCE_DEAD_LETTERS = "dead letters"
SOURCE_BROKER = "broker"
SOURCE_PAUSED = "paused"
SOURCE_MONITOR = "monitor"


# --- which queues exist ---------------------------------------------------------


def known_queues(
    *, discovered: Iterable[str], dead_letter_queues: Iterable[str]
) -> dict[str, list[str]]:
    """Every queue worth showing, with the reasons it is known."""
    sources: dict[str, list[str]] = {}

    def add(names: Iterable[str], source: str) -> None:
        for name in names:
            if name and not is_plumbing(name) and source not in sources.setdefault(name, []):
                sources[name].append(source)

    add(settings.MONITOR_QUEUES, SOURCE_CONFIGURED)
    for queues in WorkerSnapshot.objects.values_list("queues", flat=True):
        add(queues or [], SOURCE_WORKERS)
    add(dead_letter_queues, SOURCE_DEAD_LETTERS)
    add(discovered, SOURCE_BROKER)
    add(QueuePause.objects.values_list("queue", flat=True), SOURCE_PAUSED)
    # The monitor drains it; shown for its depth, never as "no consumer".
    add([settings.DEADLETTERS_QUEUE], SOURCE_MONITOR)
    return sources


# --- the broker sampler -----------------------------------------------------------


@dataclass
class BrokerSampler:
    """Depth and age of every known queue, with an hour-scale history."""

    # Queues named by the dead letters of the last day (the monitor's job list
    # hands in ``deadletters.selectors.recent_queues``).
    dead_letter_source: Callable[[datetime], set[str]] = lambda now: set()
    reader: DepthReader | None = None
    discovered: set[str] = field(default_factory=set)
    dead_letter_queues: set[str] = field(default_factory=set)
    _discovered_at: float = -math.inf
    # The deepest sample (and oldest age) of each queue in the current step.
    _step: datetime | None = None
    _step_max: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)

    def __call__(self, now: datetime | None = None) -> None:
        now = now or timezone.now()
        try:
            depths, known = self._read(now)
        except (*BROKER_ERRORS, DepthError) as exc:
            self.close()
            logger.warning("broker sampling failed: %s", exc)
            record_failure(BROKER_COLLECTOR, exc)
            return
        store_queue_samples(known, depths, now=now, step_max=self._step_maxima(now, depths))
        record_success(BROKER_COLLECTOR)

    def _read(self, now: datetime) -> tuple[dict[str, QueueDepth], dict[str, list[str]]]:
        if self.reader is None:
            self.reader = open_reader()
        due = time.monotonic() - self._discovered_at >= DISCOVER_EVERY_SECONDS
        if due or self.reader.cheap_discovery:
            self.discovered = self.reader.discover()
        if due:
            self.dead_letter_queues = self.dead_letter_source(now)
            self._discovered_at = time.monotonic()
        known = known_queues(discovered=self.discovered, dead_letter_queues=self.dead_letter_queues)
        return self.reader.sample(sorted(known)), known

    def _step_maxima(
        self, now: datetime, depths: dict[str, QueueDepth]
    ) -> dict[str, tuple[int | None, float | None]]:
        step = history_step(now)
        if step != self._step:
            self._step, self._step_max = step, {}
        for name, sample in depths.items():
            depth, age = self._step_max.get(name, (None, None))
            self._step_max[name] = (
                _max(depth, sample.depth),
                _max(age, oldest_age(sample, now)),
            )
        return self._step_max

    def close(self) -> None:
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception as exc:
                logger.debug("closing the depth reader: %s", exc)
            self.reader = None


def _max(a: _N | None, b: _N | None) -> _N | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def history_step(now: datetime) -> datetime:
    step = settings.MONITOR_HISTORY_STEP
    return datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, UTC)


def oldest_age(sample: QueueDepth, now: datetime) -> float | None:
    if sample.oldest_sent_at is None or not sample.depth:
        return None
    # A producer's clock a little ahead of ours is not a negative age.
    return max(0.0, now.timestamp() - sample.oldest_sent_at)


_SNAPSHOT_FIELDS = [
    "sampled_at",
    "sources",
    "exists",
    "depth",
    "ready",
    "unacked",
    "broker_consumers",
    "oldest_age",
]


def store_queue_samples(
    known: dict[str, list[str]],
    depths: dict[str, QueueDepth],
    *,
    now: datetime,
    step_max: dict[str, tuple[int | None, float | None]],
) -> None:
    """Upsert the latest snapshots and this step's history points; drop the rest.

    Rates are the workers sampler's business (``WorkerSampler._update_rates``); the
    upsert leaves them alone.
    """
    snapshots = []
    points = []
    step = history_step(now)
    for name, sources in known.items():
        sample = depths.get(name, QueueDepth(name))
        age = oldest_age(sample, now)
        snapshots.append(
            QueueSnapshot(
                name=name,
                sampled_at=now,
                sources=sources,
                exists=sample.exists,
                depth=sample.depth,
                ready=sample.ready,
                unacked=sample.unacked,
                broker_consumers=sample.consumers,
                oldest_age=age,
            )
        )
        if sample.exists:
            depth_max, age_max = step_max.get(name, (sample.depth, age))
            points.append(
                QueueHistory(
                    queue=name,
                    at=step,
                    depth=sample.depth,
                    depth_max=depth_max,
                    oldest_age=age_max,
                )
            )
    with transaction.atomic():
        QueueSnapshot.objects.bulk_create(
            snapshots,
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=_SNAPSHOT_FIELDS,
        )
        QueueHistory.objects.bulk_create(
            points,
            update_conflicts=True,
            unique_fields=["queue", "at"],
            update_fields=["depth", "depth_max", "oldest_age"],
        )
        stale = set(QueueSnapshot.objects.values_list("name", flat=True)) - set(known)
        if stale:
            QueueSnapshot.objects.filter(name__in=stale).delete()
        horizon = now - timedelta(hours=settings.MONITOR_HISTORY_HOURS)
        QueueHistory.objects.filter(at__lt=horizon).delete()


# --- the workers sampler ----------------------------------------------------------


@dataclass
class WorkerSampler:
    """One inspect round: every worker's state, and each queue's rates."""

    rounds: int = 0
    discover_every: int = DISCOVER_WORKERS_EVERY_ROUNDS
    # Per worker: when it last answered (monotonic) and its received counts then.
    _counts: dict[str, tuple[float, dict[str, int]]] = field(default_factory=dict)
    # Queue depths at the previous round, for the arrival rate.
    _depths_at: float | None = None
    _depths: dict[str, int | None] = field(default_factory=dict)
    # Kept open between rounds: opening one is a good share of a round's time.
    _connection: Connection | None = None

    def __call__(self) -> None:
        now = timezone.now()
        online = WorkerSnapshot.objects.filter(online=True).count()
        discover = online == 0 or self.rounds % self.discover_every == 0
        self.rounds += 1
        try:
            if self._connection is None:
                self._connection = control.connect()
            reports = control.snapshot_round(
                limit=None if discover else online, connection=self._connection
            )
        except BrokerUnavailable as exc:
            self.close()
            logger.warning("worker sampling failed: %s", exc)
            record_failure(WORKERS_COLLECTOR, exc)
            return
        if reports is None:
            # Nobody answered: not "no workers". They go offline after the grace.
            logger.info("no worker replied to the inspect round")
        store_worker_reports(reports or {}, now=now)
        self._update_rates(reports, time.monotonic())
        record_success(WORKERS_COLLECTOR)

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception as exc:
                logger.debug("closing the control connection: %s", exc)
            self._connection = None

    def _update_rates(self, reports: dict[str, control.Report] | None, at: float) -> None:
        """Consumption from the workers' received counts; arrivals add the depth change.

        A queue gets no rate (None) when one of its consumers did not answer
        or has no counts (a worker without the hook): a partial sum would
        look exact and be wrong. No reply at all is no rate at all.
        """
        consumed, unknown = self._consumption(reports or {}, at)
        snapshots = list(QueueSnapshot.objects.only("name", "depth"))
        window = None if self._depths_at is None else at - self._depths_at
        for snapshot in snapshots:
            previous = self._depths.get(snapshot.name)
            if reports is None or window is None or snapshot.name in unknown:
                snapshot.out_rate = snapshot.in_rate = None
                continue
            out_rate = consumed.get(snapshot.name, 0.0)
            snapshot.out_rate = out_rate
            snapshot.in_rate = (
                None
                if previous is None or snapshot.depth is None
                else max(0.0, out_rate + (snapshot.depth - previous) / window)
            )
        QueueSnapshot.objects.bulk_update(snapshots, ["in_rate", "out_rate"], batch_size=500)
        self._depths_at = at
        self._depths = {snapshot.name: snapshot.depth for snapshot in snapshots}

    def _consumption(
        self, reports: dict[str, control.Report], at: float
    ) -> tuple[dict[str, float], set[str]]:
        """Messages per second each queue gave to workers, and the queues we cannot tell."""
        consumed: dict[str, float] = {}
        unknown: set[str] = set()
        for host, report in reports.items():
            counts = report.get("received")
            if not isinstance(counts, dict):
                unknown.update(queue_names(report.get("active_queues")))
                continue
            previous = self._counts.get(host)
            current = {str(queue): int(n) for queue, n in counts.items()}
            self._counts[host] = (at, current)
            if previous is None:
                unknown.update(queue_names(report.get("active_queues")))
                continue
            seconds = at - previous[0]
            for queue, count in current.items():
                before = previous[1].get(queue, 0)
                # Fewer than before: the worker restarted and counts from zero.
                delta = count - before if count >= before else count
                consumed[queue] = consumed.get(queue, 0.0) + delta / seconds
        online = dict(WorkerSnapshot.objects.filter(online=True).values_list("hostname", "queues"))
        for host, queues in online.items():
            if host not in reports:
                unknown.update(queues or [])
        # A worker that missed a round keeps its baseline; a gone one drops it.
        for host in set(self._counts) - set(online):
            del self._counts[host]
        return consumed, unknown


def queue_names(active_queues: Any) -> list[str]:
    if not isinstance(active_queues, list):
        return []
    return [str(q["name"]) for q in active_queues if isinstance(q, dict) and q.get("name")]


def store_worker_reports(reports: dict[str, control.Report], *, now: datetime) -> None:
    """Upsert the workers that answered; age and forget the ones that did not."""
    rows = [
        WorkerSnapshot(hostname=host, **worker_fields(report, now))
        for host, report in reports.items()
    ]
    fields = [f for f in worker_fields({}, now) if f != "first_seen_at"]
    with transaction.atomic():
        WorkerSnapshot.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["hostname"], update_fields=fields
        )
        offline_before = now - timedelta(seconds=settings.MONITOR_WORKER_OFFLINE_AFTER)
        WorkerSnapshot.objects.filter(online=True, last_seen_at__lt=offline_before).update(
            online=False
        )
        forget_before = now - timedelta(seconds=settings.MONITOR_WORKER_FORGET_AFTER)
        WorkerSnapshot.objects.filter(last_seen_at__lt=forget_before).delete()


def worker_fields(report: control.Report, now: datetime) -> dict[str, Any]:
    """The columns of a ``WorkerSnapshot`` from one worker's report."""
    stats = _dict(report.get("stats"))
    pool = _dict(stats.get("pool"))
    autoscaler = _dict(stats.get("autoscaler"))
    processes = pool.get("processes")
    totals = _dict(stats.get("total"))
    return {
        "first_seen_at": now,
        "last_seen_at": now,
        "online": True,
        "pid": _int(stats.get("pid")),
        "sw_ver": str(report.get("sw_ver") or "")[:32],
        "pool": _pool_name(pool.get("implementation")),
        "pool_size": _int(pool.get("max-concurrency")),
        "concurrency": len(processes) if isinstance(processes, list) else None,
        "autoscale_max": _int(autoscaler.get("max")),
        "autoscale_min": _int(autoscaler.get("min")),
        "prefetch_count": _int(stats.get("prefetch_count")),
        "active_count": _int(report.get("active_count")) or 0,
        "reserved_count": _int(report.get("reserved_count")) or 0,
        "scheduled_count": _int(report.get("scheduled_count")) or 0,
        "processed": sum(int(n) for n in totals.values() if isinstance(n, int)),
        "loadavg": [float(x) for x in report.get("loadavg") or [] if isinstance(x, int | float)],
        "uptime": _int(stats.get("uptime")),
        "queues": queue_names(report.get("active_queues")),
        "active": [task_summary(t) for t in report.get("active") or []],
        "reserved": [task_summary(t) for t in report.get("reserved") or []],
        "scheduled": [scheduled_summary(s) for s in report.get("scheduled") or []],
        "registered": [str(name) for name in report.get("registered") or []][:1000],
        # Untrusted like the rest: only the settings the checks read, of their types.
        "config": clean_config(report.get("config")),
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pool_name(implementation: Any) -> str:
    # "celery.concurrency.prefork:TaskPool" -> "prefork"
    text = str(implementation or "")
    return text.split(":")[0].rsplit(".", 1)[-1][:64]


def task_summary(task: Any) -> dict[str, Any]:
    """A task as the pages show it; arguments only as short reprs."""
    if not isinstance(task, dict):
        return {"id": "", "name": control.safe_repr(task)}
    delivery = _dict(task.get("delivery_info"))
    started = task.get("time_start")
    return {
        "id": str(task.get("id") or "")[:255],
        "name": str(task.get("name") or "")[:255],
        "args": control.safe_repr(task.get("args", "")),
        "kwargs": control.safe_repr(task.get("kwargs", "")),
        "started": float(started) if isinstance(started, int | float) else None,
        "queue": str(delivery.get("routing_key") or "")[:255],
        "worker_pid": _int(task.get("worker_pid")),
    }


def scheduled_summary(entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return task_summary(entry)
    return {
        **task_summary(entry.get("request")),
        "eta": str(entry.get("eta") or "")[:64],
        "priority": _int(entry.get("priority")),
    }
