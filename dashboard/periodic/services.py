"""Run now: send a periodic entry's task at once, as beat would, audited."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from dashboard import audit
from dashboard.audit import AnyUser
from dashboard.broker import BrokerUnavailable
from dashboard.broker.publish import publish_task
from dashboard.models import AuditEvent, PeriodicEntry

__all__ = ["AlreadySent", "BrokerUnavailable", "InvalidRun", "NotRunnable", "run_now"]

RUN_NOW = "periodic_run_now"
# A form's token is remembered this long: a second click within it sends nothing.
TOKEN_MEMORY = timedelta(hours=1)
TOKEN = re.compile(r"[A-Za-z0-9-]{8,64}")


class InvalidRun(ValueError):
    """A field of the request is wrong; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotRunnable(Exception):
    pass


@dataclass(frozen=True)
class AlreadySent(Exception):
    event: AuditEvent

    def __str__(self) -> str:
        sent = timezone.localtime(self.event.at)
        who = self.event.username or "someone"
        return (
            f"Already sent by {who} at {sent:%H:%M:%S} as task"
            f" {self.event.details.get('task_id', '?')}: this click sent nothing."
        )


def run_now(*, entry: PeriodicEntry, token: str, user: AnyUser) -> str:
    """Send the entry's task with its configured args, kwargs, queue and options;
    return the new task's id. ``token`` comes from the form: a second request
    with the same token (a double click) sends nothing and raises ``AlreadySent``."""
    if not TOKEN.fullmatch(token or ""):
        raise InvalidRun("token", "The form's token is missing or malformed: reload the page.")
    if entry.lossy:
        raise NotRunnable(
            f"{entry.name}'s arguments are not JSON (beat reported them as reprs):"
            " it can only be sent by beat."
        )
    with transaction.atomic():
        # One run-now of an entry at a time: a double click waits here, then sees the first.
        PeriodicEntry.objects.select_for_update().filter(pk=entry.pk).first()
        earlier = AuditEvent.objects.filter(
            action=RUN_NOW,
            target_ids=[entry.name],
            at__gte=timezone.now() - TOKEN_MEMORY,
            details__token=token,
        ).first()
        if earlier is not None:
            raise AlreadySent(earlier)
        task_id = str(uuid.uuid4())
        options = entry.options
        priority = options.get("priority")
        publish_task(
            name=entry.task,
            args=list(entry.args),
            kwargs=dict(entry.kwargs),
            task_id=task_id,
            queue=entry.queue,
            exchange=str(options.get("exchange") or ""),
            routing_key=str(options.get("routing_key") or ""),
            priority=priority if isinstance(priority, int) else None,
            headers={"x_beat_entry": entry.name, "x_run_now": True},
        )
        audit.record(
            user=user,
            action=RUN_NOW,
            target_type="periodic",
            target_ids=[entry.name],
            details={"task": entry.task, "task_id": task_id, "queue": entry.queue, "token": token},
        )
    return task_id
