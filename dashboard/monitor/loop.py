"""The monitor process: drains the dead-letter and outcome queues into the database, and
runs the periodic jobs (``dashboard.monitor.jobs``) beside it.

It survives its neighbours: a broker or database that goes away is waited for
and reconnected, a batch is acked only after its commit, and SIGTERM finishes
the batch in hand and leaves.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from dashboard.broker import BROKER_ERRORS
from dashboard.broker.inbox import Inbox, open_inbox
from dashboard.logs import log_context, new_id
from dashboard.monitor.jobs import (
    UNAVAILABLE,
    BatchResult,
    Stream,
    ingested_streams,
    scheduled_jobs,
)
from dashboard.monitor.leader import open_lease
from dashboard.monitor.scheduler import Scheduler
from dashboard.monitor.status import INGEST_COLLECTOR, record_failure, record_success

logger = logging.getLogger("dashboard.monitor")

STATUS_EVERY_SECONDS = 5.0


@dataclass
class Totals(BatchResult):
    """Everything this monitor stored since it started."""

    batches: int = 0
    # Rounds that failed for a reason other than the broker.
    errors: int = 0

    def add(self, result: BatchResult) -> None:
        for name in ("received", "stored", "duplicates", "quarantined"):
            setattr(self, name, getattr(self, name) + getattr(result, name))
        self.batches += 1


@dataclass
class Monitor:
    stop: threading.Event = field(default_factory=threading.Event)
    # What it drains, and how each queue's batches are stored (dashboard.monitor.jobs).
    streams: list[Stream] = field(default_factory=ingested_streams)
    batch_size: int = field(default_factory=lambda: settings.DEADLETTERS_BATCH_SIZE)
    lease_seconds: int = field(default_factory=lambda: settings.DEADLETTERS_LEASE_SECONDS)
    totals: Totals = field(default_factory=Totals)
    _reported_at: float = 0.0

    def run(self, *, until_empty: bool = False) -> Totals:
        """Ingest and run the jobs until stopped.

        With ``until_empty`` it only ingests, until the queues it drains are empty.
        """
        scheduler = None
        if not until_empty:
            scheduler = Scheduler(scheduled_jobs(), self.stop, lease=open_lease())
            scheduler.start()
        try:
            return self._ingest(until_empty=until_empty)
        finally:
            if scheduler is not None:
                self.stop.set()
                scheduler.join(10)

    @property
    def queues(self) -> list[str]:
        return [stream.queue for stream in self.streams]

    def _ingest(self, *, until_empty: bool) -> Totals:
        backoff = 0.5
        while not self.stop.is_set():
            inboxes: list[tuple[Stream, Inbox]] = []
            try:
                for stream in self.streams:
                    inbox = open_inbox(stream.queue, lease_seconds=self.lease_seconds)
                    inboxes.append((stream, inbox))
                    recovered = inbox.recover()
                    if recovered:
                        logger.info(
                            "returned %d messages of a vanished monitor to %s",
                            recovered,
                            stream.queue,
                        )
                backoff = 0.5
                if self._drain(inboxes, until_empty=until_empty):
                    break
            except BROKER_ERRORS as exc:
                logger.warning("broker unreachable (%s); retrying in %.1fs", exc, backoff)
                self._report(error=f"broker unreachable: {exc}")
                backoff = self._back_off(backoff)
            except Exception as exc:
                # Not the broker: a bug or the database refusing what it never
                # refused before. Said as what it is, counted, and tried again.
                logger.exception("ingestion failed; retrying in %.1fs", backoff)
                self.totals.errors += 1
                self._report(error=f"ingestion failed: {exc!r}")
                backoff = self._back_off(backoff)
            finally:
                for _, inbox in inboxes:
                    try:
                        inbox.close()
                    except Exception as exc:
                        logger.warning("could not close the inbox cleanly: %s", exc)
        return self.totals

    def _back_off(self, backoff: float) -> float:
        """Wait ``backoff`` seconds (alive meanwhile); the next wait is longer."""
        heartbeat(force=True)
        self.stop.wait(backoff)
        return min(backoff * 2, 10.0)

    def _drain(self, inboxes: list[tuple[Stream, Inbox]], *, until_empty: bool) -> bool:
        """Returns True when the run is over (stopped, or empty in until_empty mode)."""
        next_recover = time.monotonic() + self.lease_seconds / 2
        # The wait for a message is shared out: a turn of all the queues takes it.
        wait = 0.5 / len(inboxes)
        busy = False
        while not self.stop.is_set():
            heartbeat()
            full = False
            for stream, inbox in inboxes:
                # While batches come full, a queue that polls is not waited on:
                # an empty outcome queue would otherwise cost every round of a
                # backlog of dead letters its share of the wait.
                idle = 0.0 if (busy or full) and inbox.polls else wait
                messages = inbox.fetch(self.batch_size, wait=idle)
                if not messages:
                    continue
                # Every line about this batch, here and in ingest, carries its id.
                with log_context(batch_id=new_id()[:16]):
                    result = self._store(stream, messages, inbox)
                    if result is None:
                        return True  # stopped while the database was away: not acked
                    inbox.ack()
                    # Reports arrive every few seconds from every process: their
                    # batches are told only when one had to be kept aside.
                    quiet = stream.routine and not result.quarantined
                    logger.log(
                        logging.DEBUG if quiet else logging.INFO,
                        "batch of %d from %s stored: %d new, %d duplicates, %d quarantined",
                        result.received,
                        stream.queue,
                        result.stored,
                        result.duplicates,
                        result.quarantined,
                    )
                full = full or len(messages) >= self.batch_size
            if until_empty and not full:
                return True  # no batch was full: the queues were empty
            busy = full
            self._report()
            if time.monotonic() >= next_recover:
                for _, inbox in inboxes:
                    inbox.recover()
                next_recover = time.monotonic() + self.lease_seconds / 2
        return True

    def _report(self, error: str | None = None) -> None:
        """Mark the ingest collector alive (at most every few seconds) or failing."""
        now = time.monotonic()
        if error is None and now - self._reported_at < STATUS_EVERY_SECONDS:
            return
        try:
            if error is None:
                record_success(INGEST_COLLECTOR)
            else:
                record_failure(INGEST_COLLECTOR, error)
            self._reported_at = now if error is None else 0.0
        except DatabaseError as exc:
            logger.warning("could not record the ingest status: %s", exc)
        finally:
            _drop_old_connection()

    def _store(self, stream: Stream, messages: list, inbox: Inbox) -> BatchResult | None:
        """Store the batch, waiting out a database outage; None if stopped meanwhile."""
        backoff = 0.5
        while True:
            try:
                result = stream.store(messages)
                self.totals.add(result)
                if result.quarantined:
                    logger.warning("quarantined %d unreadable messages", result.quarantined)
                return result
            except UNAVAILABLE as exc:
                logger.warning(
                    "database unreachable (%s); holding %d messages of %s",
                    exc,
                    len(messages),
                    stream.queue,
                )
                _drop_old_connection()
                inbox.heartbeat()
                heartbeat(force=True)
                if self.stop.wait(backoff):
                    return None
                backoff = min(backoff * 2, 5.0)


_last_beat = 0.0


def heartbeat(*, force: bool = False) -> None:
    """Touch this replica's heartbeat file, which ``monitor --check`` reads: the
    loop is alive (at most one write every few seconds, unless ``force``)."""
    global _last_beat
    now = time.monotonic()
    if not force and now - _last_beat < STATUS_EVERY_SECONDS:
        return
    _last_beat = now
    path = Path(settings.MONITOR_HEARTBEAT_FILE)
    try:
        path.touch()
    except OSError as exc:
        logger.warning("cannot touch the heartbeat file %s: %s", path, exc)


def heartbeat_age() -> float | None:
    """Seconds since the loop last touched the heartbeat file; None without one."""
    try:
        return time.time() - Path(settings.MONITOR_HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return None


def _drop_old_connection() -> None:
    """Let a broken or aged connection go, so that the next query reconnects.

    Never inside an outer transaction (a caller that ingests within one, as the
    tests do): closing there would close the caller's connection under it.
    """
    if not connection.in_atomic_block:
        close_old_connections()
