"""Queue and worker controls: a Celery control command, its effect, and its audit.

Each returns what the workers answered (``control.Replies``) and raises
``BrokerUnavailable`` when the broker cannot be reached, in which case
nothing was sent and nothing is audited.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from dashboard import audit
from dashboard.audit import AnyUser
from dashboard.broker import BrokerUnavailable, control
from dashboard.models import QueuePause, WorkerSnapshot
from dashboard.queues.selectors import consumers_by_queue, online_worker_names

__all__ = [
    "BrokerUnavailable",
    "ConfirmationMismatch",
    "InvalidControl",
    "NotPaused",
    "queue_pause",
    "queue_purge",
    "queue_resume",
    "task_revoke",
    "worker_autoscale",
    "worker_pool_resize",
]


class NotPaused(Exception):
    pass


class ConfirmationMismatch(Exception):
    pass


class InvalidControl(Exception):
    pass


def _limit() -> int | None:
    """Replies to wait for: the workers we believe online (None: wait the timeout)."""
    return len(online_worker_names()) or None


def queue_pause(*, queue: str, user: AnyUser) -> control.Replies:
    """Every worker stops consuming ``queue``; resume asks its consumers back."""
    consumers = consumers_by_queue().get(queue, [])
    replies = control.cancel_consumer(queue, limit=_limit())
    with transaction.atomic():
        QueuePause.objects.update_or_create(
            queue=queue,
            defaults={
                "paused_by_id": audit.user_id(user),
                "username": user.get_username() if user.is_authenticated else "",
                "workers": sorted(consumers),
            },
        )
        _forget_consumption(queue, replies.ok)
        audit.record(
            user=user,
            action="queue_pause",
            target_type="queue",
            target_ids=[queue],
            details={"replies": replies.as_details(), "consumers": consumers},
        )
    return replies


def _forget_consumption(queue: str, hostnames: Iterable[str]) -> None:
    """Show the pause at once instead of after the next workers round."""
    for worker in WorkerSnapshot.objects.filter(hostname__in=list(hostnames)):
        if queue in (worker.queues or []):
            worker.queues = [q for q in worker.queues if q != queue]
            worker.save(update_fields=["queues"])


def queue_resume(*, queue: str, user: AnyUser) -> control.Replies:
    """The workers that consumed ``queue`` when it was paused consume it again.

    Workers started since then consume their own ``-Q`` queues already; a
    worker that never consumed it is not asked to start.
    """
    pause = QueuePause.objects.filter(queue=queue).first()
    if pause is None:
        raise NotPaused(f"{queue!r} is not paused.")
    online = set(online_worker_names())
    destination = [host for host in pause.workers if host in online]
    replies = (
        control.add_consumer(queue, destination=destination)
        if destination
        else control.Replies("add_consumer")
    )
    with transaction.atomic():
        pause.delete()
        audit.record(
            user=user,
            action="queue_resume",
            target_type="queue",
            target_ids=[queue],
            details={"replies": replies.as_details(), "asked": destination},
        )
    return replies


def queue_purge(*, queue: str, confirmation: str, user: AnyUser) -> int:
    """Delete every waiting message of ``queue``; the operator typed its name."""
    if confirmation.strip() != queue:
        raise ConfirmationMismatch(f"Type the queue name, {queue}, to purge it.")
    purged = control.purge(queue)
    audit.record(
        user=user,
        action="queue_purge",
        target_type="queue",
        target_ids=[queue],
        count=purged,
        details={"purged": purged},
    )
    return purged


def worker_pool_resize(*, hostname: str, action: str, n: int, user: AnyUser) -> control.Replies:
    if action not in ("grow", "shrink") or not 1 <= n <= 100:
        raise InvalidControl("Grow or shrink the pool by 1 to 100 processes.")
    grow = action == "grow"
    replies = control.pool_grow(hostname, n) if grow else control.pool_shrink(hostname, n)
    audit.record(
        user=user,
        action="worker_pool_grow" if grow else "worker_pool_shrink",
        target_type="worker",
        target_ids=[hostname],
        count=n,
        details={"replies": replies.as_details()},
    )
    return replies


def worker_autoscale(
    *, hostname: str, maximum: int, minimum: int, user: AnyUser
) -> control.Replies:
    if not 0 <= minimum <= maximum or maximum < 1:
        raise InvalidControl("Autoscale needs 0 <= min <= max, and max of at least 1.")
    replies = control.autoscale(hostname, maximum=maximum, minimum=minimum)
    audit.record(
        user=user,
        action="worker_autoscale",
        target_type="worker",
        target_ids=[hostname],
        details={"max": maximum, "min": minimum, "replies": replies.as_details()},
    )
    return replies


def task_revoke(*, task_id: str, terminate: bool, user: AnyUser) -> control.Replies:
    task_id = task_id.strip()
    # NUL: no task id holds one, and the audit (PostgreSQL) cannot store it.
    if not task_id or len(task_id) > 255 or "\x00" in task_id:
        raise InvalidControl("Give the id of the task to revoke.")
    replies = control.revoke(task_id, terminate=terminate, limit=_limit())
    audit.record(
        user=user,
        action="task_revoke",
        target_type="task",
        target_ids=[task_id],
        details={"terminate": terminate, "replies": replies.as_details()},
    )
    return replies
