"""What the monitor runs: the one place that wires the apps' work into it.

The loop (``dashboard.monitor.loop``) stores what it drains from the
dead-letter queue with ``store_dead_letters``; the scheduler runs
``scheduled_jobs`` beside it. A capability that needs the monitor adds itself
here, and nowhere else in the monitor.
"""

from __future__ import annotations

from django.conf import settings

from dashboard.monitor.scheduler import Job
from dashboard.queues.sampling import BrokerSampler, WorkerSampler
from deadletters import bulk_runner, retention, search
from deadletters.ingest import UNAVAILABLE, BatchResult, store_batch
from deadletters.selectors import recent_queues

__all__ = ["UNAVAILABLE", "BatchResult", "broker_sampler", "scheduled_jobs", "store_dead_letters"]

store_dead_letters = store_batch


def broker_sampler() -> BrokerSampler:
    return BrokerSampler(dead_letter_source=recent_queues)


def scheduled_jobs() -> list[Job]:
    """Every periodic job of the monitor."""
    return [
        Job("sample-broker", settings.MONITOR_BROKER_INTERVAL, broker_sampler()),
        Job("sample-workers", settings.MONITOR_WORKERS_INTERVAL, WorkerSampler()),
        Job("search-index", 1.0, search.index_all_pending),
        Job("bulk-actions", 1.0, bulk_runner.run_pending),
        Job("retention", 600.0, retention.prune),
    ]
