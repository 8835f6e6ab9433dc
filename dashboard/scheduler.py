"""Periodic jobs of the monitor: sampling, background actions, pruning.

They run in one thread beside the ingestion loop, so that a slow inspect
round never holds up dead letters. A job that raises is logged and tried again
at its next turn; it never stops the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from dashboard.sampling import BrokerSampler, WorkerSampler

logger = logging.getLogger("dashboard.monitor")


@dataclass(frozen=True)
class Job:
    name: str
    interval: float
    run: Callable[[], object]


def scheduled_jobs() -> list[Job]:
    """Every periodic job of the monitor; each capability adds its own here."""
    return [
        Job("sample-broker", settings.MONITOR_BROKER_INTERVAL, BrokerSampler()),
        Job("sample-workers", settings.MONITOR_WORKERS_INTERVAL, WorkerSampler()),
    ]


class Scheduler(threading.Thread):
    def __init__(self, jobs: list[Job], stop: threading.Event) -> None:
        super().__init__(name="monitor-scheduler", daemon=True)
        self.jobs = jobs
        self.stop = stop

    def run(self) -> None:
        due = {job.name: 0.0 for job in self.jobs}
        while not self.stop.is_set() and self.jobs:
            for job in self.jobs:
                if self.stop.is_set():
                    break
                if time.monotonic() < due[job.name]:
                    continue
                try:
                    job.run()
                except Exception:
                    logger.exception(
                        "job %s failed; it runs again in %.0fs", job.name, job.interval
                    )
                finally:
                    close_old_connections()
                due[job.name] = time.monotonic() + job.interval
            wait = min(due.values()) - time.monotonic()
            self.stop.wait(max(0.05, min(wait, 1.0)))
