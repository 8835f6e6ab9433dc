"""Writes that touch the database and the broker: requeue and discard."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.utils import timezone

from dashboard.celery import BrokerUnavailable, publish_task
from deadletters.models import DeadLetter

logger = logging.getLogger("deadletters.actions")

# Celery's protocol headers never travel as custom headers of a requeue.
_RESTAMPED = {"x_sent_at", "x_queue", "x_requeued_from"}

__all__ = [
    "AlreadyHandled",
    "BrokerUnavailable",
    "NotRequeueable",
    "deadletter_discard",
    "deadletter_requeue",
]


class AlreadyHandled(Exception):
    def __init__(self, dead_letter: DeadLetter) -> None:
        when = dead_letter.handled_at
        stamp = timezone.localtime(when).strftime("%Y-%m-%d %H:%M:%S %Z") if when else "earlier"
        super().__init__(f"Already {dead_letter.state} by {dead_letter.handled_by} at {stamp}.")
        self.dead_letter = dead_letter


class NotRequeueable(Exception):
    pass


User = AbstractBaseUser | AnonymousUser


def _user_id(user: User) -> Any:
    return user.pk if user.is_authenticated else None


def deadletter_requeue(*, dead_letter: DeadLetter, user: User) -> str:
    """Publish the task again under a new id; returns the new task id.

    The state change and the publish happen in one transaction: the claim
    (an UPDATE that only an open row matches) locks the row, so of twenty
    concurrent clicks one publishes and the others find it handled. If the
    broker refuses the message, the transaction rolls back and the row stays
    open.
    """
    blocker = dead_letter.requeue_blocker
    if blocker:
        raise NotRequeueable(blocker)
    new_id = str(uuid.uuid4())
    headers = {k: v for k, v in dead_letter.headers.items() if k not in _RESTAMPED}
    headers["x_requeued_from"] = dead_letter.task_id
    with transaction.atomic():
        claimed = DeadLetter.objects.filter(pk=dead_letter.pk, state=DeadLetter.State.OPEN).update(
            state=DeadLetter.State.REQUEUED,
            requeue_task_id=new_id,
            requeued_at=timezone.now(),
            requeued_by_id=_user_id(user),
        )
        if not claimed:
            dead_letter.refresh_from_db()
            raise AlreadyHandled(dead_letter)
        publish_task(
            name=dead_letter.task_name,
            args=dead_letter.args,
            kwargs=dead_letter.kwargs,
            task_id=new_id,
            queue=dead_letter.queue,
            exchange=dead_letter.exchange,
            routing_key=dead_letter.routing_key,
            priority=dead_letter.priority,
            headers=headers,
            parent_id=dead_letter.task_id,
            root_id=dead_letter.root_id or dead_letter.task_id,
        )
    dead_letter.refresh_from_db()
    _log("requeue", dead_letter, user, new_task_id=new_id)
    return new_id


def deadletter_discard(*, dead_letter: DeadLetter, user: User) -> None:
    claimed = DeadLetter.objects.filter(pk=dead_letter.pk, state=DeadLetter.State.OPEN).update(
        state=DeadLetter.State.DISCARDED,
        discarded_at=timezone.now(),
        discarded_by_id=_user_id(user),
    )
    dead_letter.refresh_from_db()
    if not claimed:
        raise AlreadyHandled(dead_letter)
    _log("discard", dead_letter, user)


def _log(action: str, dead_letter: DeadLetter, user: User, **extra: Any) -> None:
    logger.info(
        "%s",
        json.dumps(
            {
                "event": f"deadletter_{action}",
                "user": user.get_username() if user.is_authenticated else None,
                "dead_letter": dead_letter.pk,
                "task_id": dead_letter.task_id,
                "task": dead_letter.task_name,
                **extra,
            }
        ),
    )
