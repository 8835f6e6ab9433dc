from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.urls import reverse
from django.utils.text import Truncator

from deadletters.envelope import normalise_message


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
    # Unique by a constraint (Meta), not unique=True: that would also build
    # PostgreSQL a second, LIKE-ready index that no query uses.
    dedupe_key = models.CharField(max_length=200)
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
    # What ingestion had to change to store a readable message (a time no
    # calendar holds, a lone surrogate); the message as it came is in raw_body.
    ingest_notes = models.TextField(blank=True, db_default="")

    # Lower-cased task id, message and arguments, for the list's free-text search
    # (a trigram index serves it on PostgreSQL).
    search_text = models.TextField(blank=True)

    requeued_from_task_id = models.CharField(max_length=255, blank=True)
    # The foreign keys are null on every row ingest inserts: their indexes are
    # partial (Meta), so that an insert does not update them (docs/benchmarks.md).
    requeued_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="requeued_as",
        db_index=False,
    )

    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    requeue_task_id = models.CharField(max_length=255, blank=True)
    requeued_at = models.DateTimeField(null=True, blank=True)
    # What became of the requeued task, as the hook in the worker reported it
    # (the latest of retried, succeeded, failed); empty while it has not run.
    requeue_outcome = models.CharField(max_length=16, blank=True, db_default="")
    requeue_outcome_at = models.DateTimeField(null=True, blank=True)
    requeue_runtime = models.FloatField(null=True, blank=True)
    requeued_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    # Set by a bulk action.
    bulk_action = models.ForeignKey(
        "BulkAction",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
    )
    discarded_at = models.DateTimeField(null=True, blank=True)
    discarded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
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
            *(
                models.Index(
                    fields=[field], name=f"dl_{field}", condition=Q(**{f"{field}__isnull": False})
                )
                for field in ("requeued_from", "requeued_by", "bulk_action", "discarded_by")
            ),
        ]
        constraints = [models.UniqueConstraint(fields=["dedupe_key"], name="dl_dedupe_key")]
        permissions = [
            ("requeue_deadletter", "Can requeue dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
            # The raw bytes of a message that could not be parsed, unredacted.
            ("view_raw_deadletter", "Can read raw message bytes that cannot be redacted"),
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


class DeadLetterGroup(models.Model):
    """Failures that share a signature, counted at ingest (never by grouping the big table)."""

    signature = models.CharField(max_length=40, primary_key=True)
    task_name = models.CharField(max_length=255, blank=True)
    exception_type = models.CharField(max_length=255, blank=True)
    # The latest failure's message and queue, as an example of the group.
    message = models.TextField(blank=True)
    queue = models.CharField(max_length=255, blank=True)
    total = models.PositiveBigIntegerField(default=0)
    open = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["-open", "-last_seen"], name="dlg_open_last_seen")]

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        """What people call the group: its task and its exception, never its hash."""
        return group_name(self.task_name, self.exception_type, self.message)


# A name goes into log lines and page headings: a long message is cut here.
GROUP_NAME_MESSAGE = 120


def group_name(task_name: str, exception_type: str, message: str) -> str:
    """A failure group named by its task and exception, the message as its signature
    reads it: "demo.tasks.resize_image · ValueError: image <n> has an unsupported
    colour profile". The same for every failure of the group, whichever example
    the group row keeps."""
    text = Truncator(normalise_message(message)).chars(GROUP_NAME_MESSAGE)
    exception = ": ".join(part for part in (exception_type, text) if part)
    return f"{task_name or '(unreadable messages)'} · {exception or '(no exception)'}"


class DeadLetterGroupHour(models.Model):
    """Failures of one group in one hour, for the groups page's 24-hour chart."""

    signature = models.CharField(max_length=40)
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["signature", "hour"], name="dlgh_signature_hour")
        ]
        indexes = [models.Index(fields=["hour"], name="dlgh_hour")]

    def __str__(self) -> str:
        return f"{self.signature} {self.hour:%Y-%m-%d %H}h: {self.count}"


class DeadLetterStats(models.Model):
    """Counters per task and queue: monotonic across restarts and retention pruning."""

    task_name = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    received_total = models.PositiveBigIntegerField(default=0)
    requeued_total = models.PositiveBigIntegerField(default=0)
    discarded_total = models.PositiveBigIntegerField(default=0)
    open = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task_name", "queue"], name="dls_task_queue")
        ]

    def __str__(self) -> str:
        return f"{self.task_name} on {self.queue}"


class BulkAction(models.Model):
    """Requeue or discard many dead letters, run by the monitor in the background.

    The set is fixed when the operator asks: either the ids they ticked, or the
    filter they saw (stored as its query string) bounded by the newest id at
    that moment, so failures that arrive later are not swept in.
    """

    class Action(models.TextChoices):
        REQUEUE = "requeue", "Requeue"
        DISCARD = "discard", "Discard"

    class State(models.TextChoices):
        APPROVAL = "approval", "Waiting for a second operator"
        PENDING = "pending", "Waiting for the monitor"
        CANARY = "canary", "Canary running"
        RUNNING = "running", "Running"
        PAUSED = "paused", "Paused"
        DONE = "done", "Done"
        STOPPED = "stopped", "Stopped by its canary"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    action = models.CharField(max_length=16, choices=Action.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.TextField()
    filter_query = models.TextField(blank=True)
    filter_description = models.TextField(blank=True)
    selected_ids = models.JSONField(null=True, blank=True)
    max_id = models.BigIntegerField()
    total = models.PositiveIntegerField()
    # Progress: the last dead-letter id handled, so a restart resumes after it.
    cursor = models.BigIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    # Claimed, handed to the broker, but the monitor died before it heard back:
    # never published twice, so reported instead of retried.
    unconfirmed = models.PositiveIntegerField(default=0)
    # Requeue chunks between their claim (state, new task ids) and their
    # confirmation, by id. Handed to the broker: a crash leaves them to be
    # counted as unconfirmed. Claimed, not yet handed: they go out on resume.
    pending_ids = models.JSONField(null=True, blank=True, editable=False)
    claimed_ids = models.JSONField(null=True, blank=True, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # A large requeue first requeues a few rows spread across the set, and
    # goes on only when none of them failed again the same way.
    skip_canary = models.BooleanField(default=False)
    canary_ids = models.JSONField(null=True, blank=True, editable=False)
    canary_started_at = models.DateTimeField(null=True, blank=True)
    verdict = models.TextField(blank=True)
    # Messages per second at the most (None: as fast as the broker takes them).
    rate = models.FloatField(null=True, blank=True)
    # Above DEADLETTERS_APPROVAL_ABOVE rows a second operator approves first.
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # The state a paused action goes back to.
    paused_from = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "id"], name="bulk_state")]

    def __str__(self) -> str:
        return f"{self.get_action_display()} #{self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("deadletters:bulk", args=[self.pk])

    @property
    def scope(self) -> str:
        """What it acts on, in words, as stored at the click: the filter's group is
        named there by task and exception, so the words outlive the group's row."""
        if self.selected_ids is not None:
            return f"{len(self.selected_ids)} ticked dead letters"
        return self.filter_description or "all dead letters"

    @property
    def processed(self) -> int:
        return self.done + self.skipped + self.failed + self.unconfirmed

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.processed / self.total))

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED

    @property
    def is_active(self) -> bool:
        """Carried on by the monitor (pending, canary or running)."""
        return self.state in ACTIVE


FINISHED = (
    BulkAction.State.DONE,
    BulkAction.State.STOPPED,
    BulkAction.State.CANCELLED,
    BulkAction.State.FAILED,
)
ACTIVE = (BulkAction.State.PENDING, BulkAction.State.CANARY, BulkAction.State.RUNNING)


class DeadLetterSearch(models.Model):
    """A row's ``search_text`` in the table that carries the trigram index (PostgreSQL).

    Kept apart so that the index, the costliest part of an insert, is maintained
    by the monitor's indexer beside ingestion rather than inside it.
    """

    # No database constraint: retention deletes these rows itself, in bulk,
    # instead of Django collecting a cascade row by row.
    dead_letter = models.OneToOneField(
        DeadLetter,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    text = models.TextField()

    def __str__(self) -> str:
        return self.text[:60]


class DeadLetterSearchQueue(models.Model):
    """Rows stored but not yet indexed for search; filled in the ingest transaction."""

    dead_letter = models.OneToOneField(
        DeadLetter,
        primary_key=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )

    def __str__(self) -> str:
        return str(self.pk)
