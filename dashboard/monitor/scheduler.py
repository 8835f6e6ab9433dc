"""Running the monitor's periodic jobs (``dashboard.monitor.jobs`` lists them).

They run in one thread beside the ingestion loop, so that a slow inspect
round never holds up dead letters. A job that raises is logged and tried again
at its next turn; it never stops the others.

With several monitor replicas, only the holder of the leader lease
(``dashboard.monitor.leader``) runs the jobs; the others keep trying to take the lease
and stand by.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from dashboard.monitor.leader import Lease, record_leadership, record_resignation

logger = logging.getLogger("dashboard.monitor")


@dataclass(frozen=True)
class Job:
    name: str
    interval: float
    run: Callable[[], object]


class Scheduler(threading.Thread):
    """Runs the jobs on their intervals; with a lease, only while holding it."""

    def __init__(self, jobs: list[Job], stop: threading.Event, lease: Lease | None = None) -> None:
        super().__init__(name="monitor-scheduler", daemon=True)
        self.jobs = jobs
        self.stop = stop
        self.lease = lease
        # Until when this replica may act as the leader (monotonic clock).
        self.leading_until = math.inf if lease is None else 0.0
        self._since: datetime | None = None  # when this replica took the lead
        self._standing_by = False
        self._lease_unreachable = False

    @property
    def leading(self) -> bool:
        return time.monotonic() < self.leading_until

    def run(self) -> None:
        due = {job.name: 0.0 for job in self.jobs}
        next_claim = 0.0
        # The leader renews every third of the lease; the others try more
        # often, so that a lease released on a clean stop is taken at once.
        renew_every = self.lease.seconds / 3 if self.lease else math.inf
        retry_every = min(renew_every, 1.0)
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_claim:
                    self._claim()
                    wait = renew_every if self.leading else retry_every
                    next_claim = time.monotonic() + wait
                for job in self.jobs:
                    if self.stop.is_set() or not self.leading:
                        break
                    if time.monotonic() >= due[job.name]:
                        self._run(job)
                        due[job.name] = time.monotonic() + job.interval
                wake = min([next_claim, *due.values()]) - time.monotonic()
                self.stop.wait(max(0.05, min(wake, 1.0)))
        finally:
            self._resign()

    def _run(self, job: Job) -> None:
        try:
            job.run()
        except Exception:
            logger.exception("job %s failed; it runs again in %.0fs", job.name, job.interval)
        finally:
            close_old_connections()

    def _claim(self) -> None:
        if self.lease is None:
            return
        started = time.monotonic()
        try:
            held = self.lease.acquire()
            self._lease_unreachable = False
        except Exception as exc:
            held = False
            if not self._lease_unreachable:
                logger.warning("cannot reach the leader lease (%s); not leading meanwhile", exc)
                self._lease_unreachable = True
            close_old_connections()  # the database lease may have broken its connection
        if not held:
            if self._since is not None:
                logger.warning("this monitor no longer leads the periodic jobs")
            elif not self._standing_by and not self._lease_unreachable:
                logger.info("another monitor leads the periodic jobs; standing by")
                self._standing_by = True
            self.leading_until = 0.0
            self._since = None
            return
        # Counted from before the request: the lease may have started then.
        self.leading_until = started + self.lease.seconds
        if self._since is None:
            self._since = timezone.now()
            self._standing_by = False
            logger.info("this monitor leads the periodic jobs now (%s)", self.lease.holder)
        try:
            record_leadership(self.lease, since=self._since)
        except DatabaseError as exc:
            logger.warning("could not record the leadership: %s", exc)
        finally:
            close_old_connections()

    def _resign(self) -> None:
        """Hand the lease over at once on a clean stop, instead of after it expires."""
        if self.lease is None or not self.leading:
            return
        try:
            self.lease.release()
            record_resignation(self.lease)
            logger.info("released the leader lease")
        except Exception as exc:
            logger.warning("could not release the leader lease (%s); it expires by itself", exc)
        finally:
            close_old_connections()
