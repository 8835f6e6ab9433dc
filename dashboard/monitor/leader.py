"""One leader among the monitor's replicas, through a lease in Redis or the database.

Ingestion needs no leader (competing consumers, idempotent inserts), but
sampling and background actions must run once, not once per replica. The
leader renews its lease every third of ``MONITOR_LEADER_LEASE_SECONDS``; if
it dies, the lease runs out and another replica takes it at its next try.

A leader that cannot renew (its store is away) stops leading when its lease
would have run out, counted from before its last successful renewal, so two
replicas never both believe they lead.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, DateTimeField, ExpressionWrapper, F, Q, When
from django.db.models.functions import Now
from django.utils import timezone

from dashboard import broker
from dashboard.models import MonitorLeader
from dashboard.monitor.status import record_success

logger = logging.getLogger("dashboard.monitor")

LEASE_NAME = "monitor"
# The CollectorStatus row the leader refreshes: /readyz then notices when no
# replica leads (every monitor down, or none can reach the lease's store).
LEADER_COLLECTOR = "leader"
_LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


class Lease(Protocol):
    holder: str
    seconds: int

    def acquire(self) -> bool:
        """Take the lease, or renew it if this holder has it; True while held."""
        ...

    def release(self) -> None: ...


def holder_id() -> str:
    """Unique per process: a restarted monitor is a new holder."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def open_lease(*, holder: str | None = None, seconds: int | None = None) -> Lease:
    kind = settings.MONITOR_LEADER_LEASE
    if kind == "auto":
        kind = "redis" if broker.is_redis() else "database"
    holder = holder or holder_id()
    seconds = seconds or settings.MONITOR_LEADER_LEASE_SECONDS
    if kind == "redis":
        return RedisLease(holder=holder, seconds=seconds)
    return DatabaseLease(holder=holder, seconds=seconds)


# Extend the lease only if this holder still has it: after a pause longer
# than the lease, another replica may own the key, and a blind PEXPIRE would
# extend *its* lease in our name.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLease:
    def __init__(self, *, holder: str, seconds: int, client: redis.Redis | None = None) -> None:
        self.holder = holder
        self.seconds = seconds
        self.client = client or broker.redis_client()
        self.key = f"{broker.redis_key_prefix()}celery-ops-dashboard:leader:{LEASE_NAME}"
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    def acquire(self) -> bool:
        ms = self.seconds * 1000
        if int(self._renew(keys=[self.key], args=[self.holder, ms])):
            return True
        return bool(self.client.set(self.key, self.holder, nx=True, px=ms))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.holder])


class DatabaseLease:
    """The lease as a row; the database's clock decides expiry, not the replicas'."""

    def __init__(self, *, holder: str, seconds: int) -> None:
        self.holder = holder
        self.seconds = seconds

    def acquire(self) -> bool:
        if self._take():
            return True
        try:
            with transaction.atomic():
                _, created = MonitorLeader.objects.get_or_create(
                    name=LEASE_NAME, defaults={"expires_at": _LONG_AGO}
                )
        except IntegrityError:
            created = False  # another replica created it at the same moment
        return self._take() if created else False

    def _take(self) -> bool:
        expires = ExpressionWrapper(
            Now() + timedelta(seconds=self.seconds), output_field=DateTimeField()
        )
        # One statement decides: it matches only if the row is ours or expired,
        # so of two replicas racing for an expired lease one updates a row.
        taken = (
            MonitorLeader.objects.filter(name=LEASE_NAME)
            .filter(Q(holder=self.holder) | Q(expires_at__lt=Now()))
            .update(
                since=Case(When(holder=self.holder, then=F("since")), default=Now()),
                holder=self.holder,
                renewed_at=Now(),
                expires_at=expires,
            )
        )
        return taken == 1

    def release(self) -> None:
        # Long expired, not "now": a successor's "expires_at < now" must hold even
        # within the same clock tick (or the same transaction on PostgreSQL).
        MonitorLeader.objects.filter(name=LEASE_NAME, holder=self.holder).update(
            expires_at=_LONG_AGO
        )


def record_leadership(lease: Lease, since: datetime) -> None:
    """Show who leads: the MonitorLeader row and the "leader" collector."""
    if not isinstance(lease, DatabaseLease):  # the database lease wrote the row itself
        now = timezone.now()
        MonitorLeader.objects.update_or_create(
            name=LEASE_NAME,
            defaults={
                "holder": lease.holder,
                "since": since,
                "renewed_at": now,
                "expires_at": now + timedelta(seconds=lease.seconds),
            },
        )
    record_success(LEADER_COLLECTOR)


def record_resignation(lease: Lease) -> None:
    """A leader that stops says so at once, instead of looking alive until expiry."""
    MonitorLeader.objects.filter(name=LEASE_NAME, holder=lease.holder).update(
        expires_at=timezone.now()
    )
