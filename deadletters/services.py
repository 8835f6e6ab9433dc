"""Writes that touch the database and the broker: requeue (with edits) and discard."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard import audit
from dashboard.broker import BrokerUnavailable
from dashboard.broker.publish import publish_task
from deadletters.aggregates import count_handled
from deadletters.models import DeadLetter
from deadletters.redact import redact

__all__ = [
    "AlreadyHandled",
    "BrokerUnavailable",
    "NotRequeueable",
    "deadletter_discard",
    "deadletter_requeue",
    "requeue_message",
]

# Stamps that a requeue sets afresh rather than copying from the failed message.
_RESTAMPED = {"x_sent_at", "x_queue", "x_requeued_from"}

User = AbstractBaseUser | AnonymousUser


class AlreadyHandled(Exception):
    def __init__(self, dead_letter: DeadLetter) -> None:
        when = dead_letter.handled_at
        stamp = timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "earlier"
        super().__init__(f"Already {dead_letter.state} by {dead_letter.handled_by} at {stamp}.")
        self.dead_letter = dead_letter


class NotRequeueable(Exception):
    pass


def requeue_message(dead_letter: DeadLetter, new_task_id: str) -> dict[str, Any]:
    """What a requeue publishes: same task, queue and arguments, a new id, fresh stamps."""
    headers = {k: v for k, v in dead_letter.headers.items() if k not in _RESTAMPED}
    headers["x_requeued_from"] = dead_letter.task_id
    return {
        "name": dead_letter.task_name,
        "args": dead_letter.args,
        "kwargs": dead_letter.kwargs,
        "task_id": new_task_id,
        "queue": dead_letter.queue,
        "exchange": dead_letter.exchange,
        "routing_key": dead_letter.routing_key,
        "priority": dead_letter.priority,
        "headers": headers,
        "parent_id": dead_letter.task_id,
        "root_id": dead_letter.root_id or dead_letter.task_id,
    }


def deadletter_requeue(
    *,
    dead_letter: DeadLetter,
    user: User,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    reason: str = "",
) -> str:
    """Publish the task again under a new id; returns the new task id.

    ``args``, ``kwargs`` and ``queue``, when given, replace the stored ones (an
    edit before requeue); the audit keeps the before and after, redacted.

    The state change and the publish happen in one transaction: the claim (an
    UPDATE that only an open row matches) locks the row, so of twenty concurrent
    clicks one publishes and the others find it handled. If the broker refuses
    the message, the transaction rolls back and the row stays open.
    """
    blocker = dead_letter.requeue_blocker
    if blocker:
        raise NotRequeueable(blocker)
    before = {"args": dead_letter.args, "kwargs": dead_letter.kwargs, "queue": dead_letter.queue}
    edits = {
        name: value
        for name, value in (("args", args), ("kwargs", kwargs), ("queue", queue))
        if value is not None and value != before[name]
    }
    new_id = str(uuid.uuid4())
    with transaction.atomic():
        claimed = DeadLetter.objects.filter(pk=dead_letter.pk, state=DeadLetter.State.OPEN).update(
            state=DeadLetter.State.REQUEUED,
            requeue_task_id=new_id,
            requeued_at=timezone.now(),
            requeued_by_id=audit.user_id(user),
            **edits,
        )
        if not claimed:
            dead_letter.refresh_from_db()
            raise AlreadyHandled(dead_letter)
        dead_letter.refresh_from_db()
        publish_task(**requeue_message(dead_letter, new_id))
        count_handled([dead_letter], action="requeue")
        details: dict[str, Any] = {"new_task_id": new_id}
        if edits:
            details["before"] = redact({k: before[k] for k in edits})
            details["after"] = redact(edits)
        audit.record(
            user=user,
            action="edit_requeue" if edits else "requeue",
            target_type="deadletter",
            target_ids=[dead_letter.pk],
            reason=reason,
            details=details,
        )
    return new_id


def deadletter_discard(*, dead_letter: DeadLetter, user: User, reason: str = "") -> None:
    with transaction.atomic():
        claimed = DeadLetter.objects.filter(pk=dead_letter.pk, state=DeadLetter.State.OPEN).update(
            state=DeadLetter.State.DISCARDED,
            discarded_at=timezone.now(),
            discarded_by_id=audit.user_id(user),
        )
        dead_letter.refresh_from_db()
        if not claimed:
            raise AlreadyHandled(dead_letter)
        count_handled([dead_letter], action="discard")
        audit.record(
            user=user,
            action="discard",
            target_type="deadletter",
            target_ids=[dead_letter.pk],
            reason=reason,
        )


def record_requeue_outcomes(outcomes: Iterable[dict[str, Any]]) -> int:
    """Note what became of requeued tasks (``task_id`` is the new id), the latest
    report winning; returns the rows updated. A failure again also arrives as a
    new dead letter, which links back to this one."""
    updated = 0
    for outcome in sorted(outcomes, key=lambda o: o["at"]):
        updated += (
            DeadLetter.objects.filter(requeue_task_id=outcome["task_id"])
            .filter(Q(requeue_outcome_at__isnull=True) | Q(requeue_outcome_at__lte=outcome["at"]))
            .update(
                requeue_outcome=outcome["state"],
                requeue_outcome_at=outcome["at"],
                requeue_runtime=outcome["runtime"],
            )
        )
    return updated
