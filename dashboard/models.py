from __future__ import annotations

from datetime import datetime

from django.db import models


class CollectorStatus(models.Model):
    """How each of the monitor's collectors last fared: one row per collector.

    Pages show how old their data is and since when a source is unreachable;
    ``/readyz`` and ``/metrics`` read the same rows.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_attempt_at = models.DateTimeField(null=True)
    last_success_at = models.DateTimeField(null=True)
    last_error = models.TextField(blank=True)
    # When the current run of failures began; None while it succeeds.
    failing_since = models.DateTimeField(null=True)

    class Meta:
        verbose_name_plural = "collector statuses"

    def __str__(self) -> str:
        return self.name

    @property
    def is_failing(self) -> bool:
        return self.failing_since is not None

    def age_seconds(self, now: datetime) -> float | None:
        if self.last_success_at is None:
            return None
        return (now - self.last_success_at).total_seconds()


class AuditEvent(models.Model):
    """One action an operator took: who, what, on which ids or filter, why, when."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text too: the audit outlives a deleted account.
    username = models.CharField(max_length=150, blank=True, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    # What it acted on: "deadletter", "queue", "worker", "task".
    target_type = models.CharField(max_length=32, blank=True)
    target_ids = models.JSONField(default=list, blank=True)
    # The filter that defined a bulk action, as the query string the operator saw.
    target_filter = models.TextField(blank=True)
    count = models.PositiveIntegerField(default=0)
    reason = models.TextField(blank=True)
    # Before/after of an edit, the workers that replied, the outcome of a batch.
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.username or 'system'} {self.action} at {self.at:%Y-%m-%d %H:%M:%S}"


class MonitorLeader(models.Model):
    """Which monitor runs the periodic jobs, since when, and until when it holds them.

    With the database lease (``MONITOR_LEADER_LEASE=database``, or a RabbitMQ
    broker) this row *is* the lease: a conditional UPDATE takes it. With the
    Redis lease the leader copies its holding here, so that pages and tests can
    see who leads either way.
    """

    name = models.CharField(max_length=64, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    since = models.DateTimeField(null=True)
    renewed_at = models.DateTimeField(null=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {self.holder or 'nobody'}"
