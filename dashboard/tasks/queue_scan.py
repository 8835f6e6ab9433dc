"""Search whole queues for a task id, in the monitor ("where is task X?").

The page reads at most ``waiting.PER_QUEUE`` messages of each queue; when that
was not all of them an operator may ask for the rest. ``request_scan`` stores
the request (one open request per id: a double click, or two operators, make
one scan) and audits it; the monitor's job ``run_pending`` carries the oldest
open request on by one slice of ``waiting.SCAN_SLICE`` messages a turn, keeps
its place in the row, and stores what it found; ``prune`` forgets requests a
day old.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from dashboard import audit
from dashboard.audit import AnyUser
from dashboard.broker import BROKER_ERRORS, waiting
from dashboard.models import TaskSearch
from dashboard.tasks.lookup import known_queues

logger = logging.getLogger("dashboard.tasks")

KEPT = timedelta(days=1)


class CannotScan(Exception):
    """The broker's queues cannot be searched (RabbitMQ): nothing was stored."""


def latest_scan(task_id: str) -> TaskSearch | None:
    """The task id's most recent request, open or finished."""
    return TaskSearch.objects.filter(task_id=task_id).order_by("-id").first()


def request_scan(*, task_id: str, user: AnyUser) -> tuple[TaskSearch, bool]:
    """The open request for ``task_id``, made now (and audited) unless one is open
    already; ``task_id`` as ``lookup.clean_task_id`` returns it. True when made."""
    cannot = waiting.unsearchable()
    if cannot:
        raise CannotScan(cannot)
    open_now = TaskSearch.objects.filter(task_id=task_id, finished_at__isnull=True)
    existing = open_now.first()
    if existing is not None:
        return existing, False
    try:
        # The partial unique index decides between two clicks that both got here.
        with transaction.atomic():
            search = TaskSearch.objects.create(
                task_id=task_id,
                requested_by_id=audit.user_id(user),
                username=user.get_username() if user.is_authenticated else "",
            )
            audit.record(
                user=user,
                action="task_queue_scan",
                target_type="task",
                target_ids=[task_id],
                details={"scan": search.pk},
            )
    except IntegrityError:
        return open_now.get(), False
    return search, True


def run_pending(*, messages: int = waiting.SCAN_SLICE, page: int = waiting.PAGE) -> None:
    """The monitor's job: read one slice of the oldest open request's queues.

    The row stays locked during the slice (PostgreSQL: a second monitor skips it
    and takes the next request; SQLite: its writers wait one slice)."""
    with transaction.atomic():
        search = (
            TaskSearch.objects.select_for_update(skip_locked=True)
            .filter(finished_at__isnull=True)
            .order_by("id")
            .first()
        )
        if search is not None:
            _advance(search, messages=messages, page=page)


def _advance(search: TaskSearch, *, messages: int, page: int) -> None:
    now = timezone.now()
    cannot = waiting.unsearchable()
    if cannot:  # asked for on Redis, the broker is RabbitMQ now
        search.started_at = search.started_at or now
        _finish(search, now, error=cannot)
        return
    if search.started_at is None:
        search.started_at = now
        search.queues = known_queues()
        try:
            search.total = waiting.count_waiting(search.queues) if search.queues else 0
        except BROKER_ERRORS as exc:
            _finish(search, now, error=f"The broker stopped answering: {exc}")
            return
    place = waiting.ScanPlace(**search.place) if search.place else waiting.ScanPlace()
    step = waiting.scan_slice(search.task_id, search.queues, place, messages=messages, page=page)
    search.place = dataclasses.asdict(step.place)
    search.scanned += step.read
    if step.found is not None:
        search.found_in_queue = step.found.queue
        search.found_priority = step.found.priority
        search.position = step.found.ahead
    if step.finished:
        _finish(search, timezone.now(), error=step.reason)
        logger.info(
            "queue scan for %s: %s after %d messages",
            search.task_id, search.state, search.scanned,
        )  # fmt: skip
    else:
        search.save()


def _finish(search: TaskSearch, at: datetime, *, error: str = "") -> None:
    search.finished_at = at
    search.error = error
    search.save()


def prune(now: datetime | None = None) -> int:
    """Forget requests asked for more than a day ago (an open one too: a monitor
    that never ran it will not run it now); returns how many."""
    cutoff = (now or timezone.now()) - KEPT
    deleted, _ = TaskSearch.objects.filter(Q(requested_at__lt=cutoff)).delete()
    return deleted
