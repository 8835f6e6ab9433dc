"""Queue and worker controls: a Celery control command, its effect, and its audit.

Each returns what the workers answered (``control.Replies``) and raises
``BrokerUnavailable`` when the broker cannot be reached, in which case
nothing was sent and nothing is audited.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from dashboard import audit
from dashboard.audit import AnyUser
from dashboard.broker import BrokerUnavailable, control
from dashboard.models import CheckSilence, QueuePause, WorkerSnapshot
from dashboard.queues.checks import RULE_KEYS, queue_list
from dashboard.queues.selectors import consumers_by_queue, online_worker_names

__all__ = [
    "BrokerUnavailable",
    "ConfirmationMismatch",
    "InvalidControl",
    "InvalidSilence",
    "NotPaused",
    "check_silence",
    "check_unsilence",
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


# --- silencing a fleet configuration check ----------------------------------------------

MAX_REASON = 2000


class InvalidSilence(Exception):
    """A field of a silence (or unsilence) that cannot be; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _silence_key(worker: WorkerSnapshot, *, check: str, scope: str, queue: str) -> tuple[str, str]:
    """The check and the target (the worker, or one of its queues) that a form names."""
    if check not in RULE_KEYS:
        raise InvalidSilence("check", "not one of the checks: " + ", ".join(sorted(RULE_KEYS)))
    if scope == "worker":
        return check, worker.hostname
    if scope != "queue":
        raise InvalidSilence("scope", "silence for the worker or for a queue")
    if queue not in queue_list(worker.queues):
        raise InvalidSilence("queue", f"not one of the queues {worker.hostname} consumes")
    return check, queue


def check_silence(
    *, worker: WorkerSnapshot, check: str, scope: str, queue: str, reason: str, user: AnyUser
) -> tuple[CheckSilence, bool]:
    """Silence ``check`` for the worker, or for every worker of one of its queues.

    Returns the silence and whether it is new. A silence that exists already (a
    double submit, two operators at once) is answered as it is, and nothing more
    is recorded.
    """
    check, target = _silence_key(worker, check=check, scope=scope, queue=queue)
    reason = reason.strip()
    if not reason:
        raise InvalidSilence("reason", "say why this check does not matter here")
    # NUL: PostgreSQL cannot store it.
    if len(reason) > MAX_REASON or "\x00" in reason:
        raise InvalidSilence("reason", f"at most {MAX_REASON:,} characters of text")
    key = {"check_name": check, "scope": scope, "target": target}
    existing = CheckSilence.objects.filter(**key).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            silence = CheckSilence.objects.create(
                **key,
                reason=reason,
                created_by_id=audit.user_id(user),
                username=user.get_username() if user.is_authenticated else "",
            )
            audit.record(
                user=user,
                action="check_silence",
                target_type=scope,
                target_ids=[target],
                reason=reason,
                details={"check": check, "worker": worker.hostname},
            )
    except IntegrityError:
        # Another request silenced it between our read and our insert.
        return CheckSilence.objects.get(**key), False
    return silence, True


def check_unsilence(
    *, worker: WorkerSnapshot, check: str, scope: str, queue: str, user: AnyUser
) -> CheckSilence | None:
    """Lift a silence; the audit keeps why it was there. None when there was none
    (a double submit): nothing is recorded then."""
    check, target = _silence_key(worker, check=check, scope=scope, queue=queue)
    with transaction.atomic():
        silence = (
            CheckSilence.objects.select_for_update()
            .filter(check_name=check, scope=scope, target=target)
            .first()
        )
        if silence is None:
            return None
        silence.delete()
        audit.record(
            user=user,
            action="check_unsilence",
            target_type=scope,
            target_ids=[target],
            reason=silence.reason,
            details={
                "check": check,
                "worker": worker.hostname,
                "silenced_by": silence.username,
                "silenced_at": silence.created_at.isoformat(),
            },
        )
    return silence
