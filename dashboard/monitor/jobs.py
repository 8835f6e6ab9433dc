"""What the monitor runs: the one place that wires the apps' work into it.

The loop (``dashboard.monitor.loop``) drains the queues of ``ingested_streams``
and stores each batch with its stream's function; the scheduler runs
``scheduled_jobs`` beside it. A capability that needs the monitor adds itself
here, and nowhere else in the monitor.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from dashboard.broker.inbox import InboundMessage
from dashboard.monitor.scheduler import Job
from dashboard.periodic import reports as periodic
from dashboard.queues.sampling import BrokerSampler, WorkerSampler
from dashboard.tasks import outcomes, queue_scan
from dashboard.tasks.events import EventCounter
from deadletters import bulk_runner, retention, search
from deadletters.ingest import UNAVAILABLE, BatchResult, store_batch
from deadletters.selectors import recent_queues
from deadletters.services import record_requeue_outcomes

__all__ = [
    "UNAVAILABLE",
    "BatchResult",
    "Stream",
    "broker_sampler",
    "ingested_streams",
    "scheduled_jobs",
    "store_dead_letters",
    "store_outcomes",
]

logger = logging.getLogger("dashboard.monitor")

store_dead_letters = store_batch


def store_outcomes(messages: list[InboundMessage]) -> BatchResult:
    """Add the outcome reports up and apply the beat reports (they share the
    queue); note what became of requeued tasks; keep a message that is no
    readable report as a quarantined dead letter."""
    beat = [m for m in messages if m.headers.get("x_ops_report") == "beat"]
    folded = outcomes.fold([m for m in messages if m.headers.get("x_ops_report") != "beat"])
    beat_folded = periodic.fold(beat)
    if folded.requeues:
        record_requeue_outcomes(folded.requeues)
    result = BatchResult(
        received=len(messages), duplicates=folded.duplicates + beat_folded.duplicates
    )
    unreadable = [
        dataclasses.replace(message, transport_error=f"unreadable {kind} report: {why}")
        for kind, reports in (("outcome", folded), ("beat", beat_folded))
        for message, why in reports.unreadable
    ]
    if unreadable:
        logger.warning("%d unreadable reports kept as dead letters", len(unreadable))
        kept = store_batch(unreadable)
        result.stored, result.quarantined = kept.stored, kept.quarantined
        result.duplicates += kept.duplicates
    return result


@dataclass(frozen=True)
class Stream:
    queue: str
    store: Callable[[list[InboundMessage]], BatchResult]
    # Routine traffic (the processes' reports): its batches are logged at DEBUG.
    routine: bool = False


def ingested_streams() -> list[Stream]:
    """The queues the monitor drains, each with what stores its batches."""
    return [
        Stream(settings.DEADLETTERS_QUEUE, store_dead_letters),
        Stream(settings.OPS_OUTCOMES_QUEUE, store_outcomes, routine=True),
    ]


def broker_sampler() -> BrokerSampler:
    return BrokerSampler(dead_letter_source=recent_queues)


def scheduled_jobs() -> list[Job]:
    """Every periodic job of the monitor."""
    return [
        Job("sample-broker", settings.MONITOR_BROKER_INTERVAL, broker_sampler()),
        Job("sample-workers", settings.MONITOR_WORKERS_INTERVAL, WorkerSampler()),
        Job("search-index", 1.0, search.index_all_pending),
        Job("bulk-actions", 1.0, bulk_runner.run_pending),
        # "Where is task X?": whole queues read for an id, a slice a turn.
        Job("task-queue-scans", 1.0, queue_scan.run_pending),
        Job("retention", 600.0, retention.prune),
        Job("outcomes-retention", 600.0, outcomes.prune),
        Job("beat-retention", 600.0, periodic.prune),
        Job("task-queue-scans-retention", 600.0, queue_scan.prune),
        *([Job("task-events", 1.0, EventCounter())] if settings.MONITOR_TASK_EVENTS else []),
    ]
