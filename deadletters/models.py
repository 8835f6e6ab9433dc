from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models.functions import Now
from django.urls import reverse


class DeadLetter(models.Model):
    """A task that failed for good, or a message that could not be read."""

    class State(models.TextChoices):
        OPEN = "open", "Open"
        REQUEUED = "requeued", "Requeued"
        DISCARDED = "discarded", "Discarded"

    class Kind(models.TextChoices):
        EXCEPTION = "exception", "Exception"
        TIME_LIMIT = "time_limit", "Time limit"
        WORKER_LOST = "worker_lost", "Worker lost"
        UNKNOWN_TASK = "unknown_task", "Unknown task"
        REJECTED = "rejected", "Rejected"
        QUARANTINED = "quarantined", "Quarantined"

    # One row per failure: the task id, or a digest of a message without one.
    dedupe_key = models.CharField(max_length=200, unique=True)
    envelope_version = models.PositiveSmallIntegerField(null=True)

    task_id = models.CharField(max_length=255, blank=True, db_index=True)
    task_name = models.CharField(max_length=255, blank=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    # True when args or kwargs could not be kept as JSON: requeue would not be faithful.
    lossy = models.BooleanField(default=False)
    queue = models.CharField(max_length=255, blank=True)
    exchange = models.CharField(max_length=255, blank=True)
    routing_key = models.CharField(max_length=255, blank=True)
    priority = models.PositiveSmallIntegerField(null=True, blank=True)
    retries = models.PositiveIntegerField(default=0)
    root_id = models.CharField(max_length=255, blank=True)
    parent_id = models.CharField(max_length=255, blank=True)
    group_id = models.CharField(max_length=255, blank=True)
    eta = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)
    headers = models.JSONField(default=dict)
    worker = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    exception_type = models.CharField(max_length=255, blank=True)
    exception_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    failed_at = models.DateTimeField()
    received_at = models.DateTimeField(db_default=Now())
    signature = models.CharField(
        max_length=40, help_text="task + exception type + normalised message"
    )

    # What a raw message carried when it was not a readable task (rejected,
    # unknown, or not an envelope at all). Never unpickled.
    content_type = models.CharField(max_length=255, blank=True)
    raw_body = models.BinaryField(null=True, blank=True)
    quarantine_reason = models.TextField(blank=True)

    requeued_from_task_id = models.CharField(max_length=255, blank=True)
    requeued_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="requeued_as"
    )

    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    requeue_task_id = models.CharField(max_length=255, blank=True)
    requeued_at = models.DateTimeField(null=True, blank=True)
    requeued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    discarded_at = models.DateTimeField(null=True, blank=True)
    discarded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-failed_at", "-id"]
        indexes = [
            models.Index(fields=["-failed_at", "-id"], name="dl_failed_at"),
            models.Index(fields=["state", "-failed_at"], name="dl_state_failed_at"),
            models.Index(fields=["task_name", "-failed_at"], name="dl_task_failed_at"),
            models.Index(fields=["queue", "-failed_at"], name="dl_queue_failed_at"),
            models.Index(fields=["exception_type", "-failed_at"], name="dl_exc_failed_at"),
            models.Index(fields=["signature", "-failed_at"], name="dl_signature_failed_at"),
            models.Index(fields=["worker", "-failed_at"], name="dl_worker_failed_at"),
            models.Index(fields=["requeue_task_id"], name="dl_requeue_task_id"),
        ]
        permissions = [
            ("requeue_deadletter", "Can requeue dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
        ]

    def __str__(self) -> str:
        return f"{self.task_name or '(no task)'}[{self.task_id or self.pk}]"

    def get_absolute_url(self) -> str:
        return reverse("deadletters:detail", args=[self.pk])

    @property
    def is_quarantined(self) -> bool:
        return bool(self.quarantine_reason)

    @property
    def raw_text(self) -> str:
        """The first bytes of the raw message, readable, never deserialised."""
        raw = bytes(self.raw_body or b"")
        return raw[:8000].decode("utf-8", "backslashreplace")

    @property
    def is_open(self) -> bool:
        return self.state == self.State.OPEN

    @property
    def requeue_blocker(self) -> str:
        """Why this row cannot be requeued as it is, or '' when it can."""
        if self.is_quarantined:
            return "This message could not be read, so it cannot be run again."
        if not self.task_name:
            return "The message names no task."
        if self.lossy:
            return "Its arguments could not be kept as JSON; a requeue would not be faithful."
        return ""

    @property
    def is_requeueable(self) -> bool:
        return self.is_open and not self.requeue_blocker

    @property
    def handled_by(self) -> str:
        user = self.requeued_by if self.state == self.State.REQUEUED else self.discarded_by
        return user.get_username() if user else "someone"

    @property
    def handled_at(self) -> datetime | None:
        return self.requeued_at if self.state == self.State.REQUEUED else self.discarded_at
