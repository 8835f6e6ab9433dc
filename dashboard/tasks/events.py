"""Task outcomes of workers without the hook, from Celery's events (``-E``).

A monitor job, run by the leader only (events reach every consumer: two
monitors would count twice). It counts the events of workers that send no
outcome reports of their own, so a worker with both the hook and ``-E`` is
counted once, from its reports. Events carry less than reports: no queue
unless producers send ``task-sent`` events, no wait unless they do either, one
broker message per state change (docs/outcomes.md).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from dashboard.broker.events import EventStream
from dashboard.models import BUCKET_COLUMNS, OUTCOME_BUCKETS, OutcomeReporter
from dashboard.tasks.outcomes import add_observed

logger = logging.getLogger("dashboard.monitor")

EVENTS = {
    "task-sent": "sent",
    "task-received": "received",
    "task-started": "started",
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}
# Tasks remembered between their events (name, queue, sent and start times).
REMEMBERED = 100_000
# A worker that reported outcomes within this long counts for itself.
REPORTING = timedelta(minutes=5)
# Events wait this long before they are counted, so that a worker with the hook
# that has just started (and sends events too) has had time to report first:
# three of the hook's default report intervals.
GRACE_SECONDS = 30.0


def _bucket(seconds: float) -> int:
    return next(
        (i for i, bound in enumerate(OUTCOME_BUCKETS) if seconds <= bound), len(OUTCOME_BUCKETS)
    )


class EventCounter:
    def __init__(self, stream: EventStream | None = None, grace: float = GRACE_SECONDS) -> None:
        self.stream = stream or EventStream()
        self.grace = grace
        self.tasks: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.waiting: deque[tuple[float, dict[str, Any]]] = deque()

    def __call__(self) -> int:
        """One turn: the events that have waited out the grace, counted; returns how many."""
        arrived = time.monotonic()
        self.waiting.extend(
            (arrived, event) for event in self.stream.drain() if event.get("type") in EVENTS
        )
        events = []
        while self.waiting and self.waiting[0][0] <= arrived - self.grace:
            events.append(self.waiting.popleft()[1])
        if not events:
            return 0
        now = timezone.now()
        reporting = set(
            OutcomeReporter.objects.filter(last_report_at__gte=now - REPORTING).values_list(
                "hostname", flat=True
            )
        )
        counts: dict[str, dict[tuple[Any, ...], int]] = defaultdict(lambda: defaultdict(int))
        times: dict[str, dict[tuple[Any, ...], list[float]]] = defaultdict(dict)
        for event in events:
            self._count(event, reporting, counts, times)
        for hostname in set(counts) | set(times):
            add_observed(
                hostname,
                [(*key, n) for key, n in counts[hostname].items()],
                [(*key, h[:-1], h[-1]) for key, h in times[hostname].items()],
                now,
            )
        return len(events)

    def _count(
        self,
        event: dict[str, Any],
        reporting: set[str],
        counts: dict[str, dict[tuple[Any, ...], int]],
        times: dict[str, dict[tuple[Any, ...], list[float]]],
    ) -> None:
        kind = EVENTS.get(str(event.get("type")))
        uuid = str(event.get("uuid") or "")
        if kind is None or not uuid:
            return
        task = self.tasks.setdefault(uuid, {})
        self.tasks.move_to_end(uuid)
        while len(self.tasks) > REMEMBERED:
            self.tasks.popitem(last=False)
        task["name"] = str(event.get("name") or task.get("name") or "")[:255]
        if kind == "sent":
            task["queue"] = str(event.get("queue") or event.get("routing_key") or "")[:255]
            task["sent_at"] = event.get("timestamp")
        hostname = str(event.get("hostname") or "")[:255]
        if not task["name"] or hostname in reporting:
            return
        stamp = float(event.get("timestamp") or 0)
        minute = datetime.fromtimestamp(stamp // 60 * 60, UTC)
        queue = task.get("queue", "")
        exception = ""
        if kind == "failed":
            exception = str(event.get("exception") or "").split("(", 1)[0][:255]
        counts[hostname][(minute, task["name"], queue, kind, exception)] += 1
        if kind == "started" and isinstance(task.get("sent_at"), int | float):
            self._observe(times[hostname], minute, task, "wait", stamp - task["sent_at"])
        if kind in ("succeeded", "failed") and isinstance(event.get("runtime"), int | float):
            self._observe(times[hostname], minute, task, "runtime", event["runtime"])

    @staticmethod
    def _observe(
        histograms: dict[tuple[Any, ...], list[float]],
        minute: datetime,
        task: dict[str, Any],
        kind: str,
        seconds: float,
    ) -> None:
        key = (minute, task["name"], task.get("queue", ""), kind)
        histogram = histograms.setdefault(key, [0] * len(BUCKET_COLUMNS[kind]) + [0.0])
        histogram[_bucket(max(0.0, seconds))] += 1
        histogram[-1] += max(0.0, seconds)

    def close(self) -> None:
        self.stream.close()
