from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.urls import reverse


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


class QueueSnapshot(models.Model):
    """The latest sample of one known queue, as the monitor last read the broker.

    Pages and ``/metrics`` read these rows; nothing on the request path asks
    the broker. ``None`` means "not known" (a broker that does not say, a
    message without a stamp), never zero.
    """

    name = models.CharField(max_length=255, unique=True)
    sampled_at = models.DateTimeField()
    # Why the queue is known: configured, workers, dead letters, broker, paused.
    sources = models.JSONField(default=list)
    # False when the broker says the queue does not exist (RabbitMQ).
    exists = models.BooleanField(default=True)
    # Messages waiting: ready plus unacknowledged where the broker tells them apart.
    depth = models.PositiveBigIntegerField(null=True)
    ready = models.PositiveBigIntegerField(null=True)
    unacked = models.PositiveBigIntegerField(null=True)
    # Consumers as the broker counts them (RabbitMQ); workers are counted on read.
    broker_consumers = models.PositiveIntegerField(null=True)
    # Age of the oldest waiting message when sampled, from its publish stamp.
    oldest_age = models.FloatField(null=True)
    # Messages per second between the two latest samples.
    in_rate = models.FloatField(null=True)
    out_rate = models.FloatField(null=True)

    class Meta:
        ordering = ["name"]
        permissions = [("control_queue", "Can pause, resume and purge queues")]

    def __str__(self) -> str:
        return self.name


class QueueHistory(models.Model):
    """One point of a queue's downsampled history: the deepest sample of a step."""

    queue = models.CharField(max_length=255)
    # The start of the step (MONITOR_HISTORY_STEP seconds).
    at = models.DateTimeField(db_index=True)
    depth = models.PositiveBigIntegerField(null=True)
    depth_max = models.PositiveBigIntegerField(null=True)
    oldest_age = models.FloatField(null=True)

    class Meta:
        ordering = ["queue", "at"]
        constraints = [
            models.UniqueConstraint(fields=["queue", "at"], name="queue_history_point"),
        ]
        verbose_name_plural = "queue history"

    def __str__(self) -> str:
        return f"{self.queue} at {self.at:%Y-%m-%d %H:%M}"


class QueuePause(models.Model):
    """A queue an operator paused: who, when, and which workers consumed it then.

    Resume asks those workers to consume it again; a worker started later
    consumes its own ``-Q`` queues whatever this row says.
    """

    queue = models.CharField(max_length=255, unique=True)
    paused_at = models.DateTimeField(auto_now_add=True)
    paused_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    workers = models.JSONField(default=list)

    def __str__(self) -> str:
        return self.queue


class WorkerSnapshot(models.Model):
    """The latest answer of one Celery worker to the monitor's inspect round."""

    hostname = models.CharField(max_length=255, unique=True)
    first_seen_at = models.DateTimeField()
    # When it last answered; it goes offline MONITOR_WORKER_OFFLINE_AFTER later.
    last_seen_at = models.DateTimeField(db_index=True)
    online = models.BooleanField(default=True)
    pid = models.PositiveIntegerField(null=True)
    sw_ver = models.CharField(max_length=32, blank=True)
    pool = models.CharField(max_length=64, blank=True)
    # The pool's configured size and the processes (or threads) it runs now.
    pool_size = models.PositiveIntegerField(null=True)
    concurrency = models.PositiveIntegerField(null=True)
    autoscale_max = models.PositiveIntegerField(null=True)
    autoscale_min = models.PositiveIntegerField(null=True)
    prefetch_count = models.PositiveIntegerField(null=True)
    active_count = models.PositiveIntegerField(default=0)
    reserved_count = models.PositiveIntegerField(default=0)
    scheduled_count = models.PositiveIntegerField(default=0)
    processed = models.PositiveBigIntegerField(default=0)
    loadavg = models.JSONField(default=list)
    # Seconds since the worker started, as of last_seen_at.
    uptime = models.PositiveBigIntegerField(null=True)
    queues = models.JSONField(default=list)
    # Task lists as last sampled, with arguments as short, safe reprs.
    active = models.JSONField(default=list)
    reserved = models.JSONField(default=list)
    scheduled = models.JSONField(default=list)
    registered = models.JSONField(default=list)
    # The settings that the fleet checks read, as the worker reported them
    # (``dashboard.queues.checks``); empty for a worker without the hook.
    config = models.JSONField(default=dict)

    class Meta:
        ordering = ["hostname"]
        permissions = [
            ("control_worker", "Can resize worker pools, autoscale and revoke tasks"),
        ]

    def __str__(self) -> str:
        return self.hostname

    def get_absolute_url(self) -> str:
        return reverse("worker_detail", args=[self.hostname])

    @property
    def autoscale_enabled(self) -> bool:
        return self.autoscale_max is not None

    def started_at(self) -> datetime | None:
        if self.uptime is None:
            return None
        return self.last_seen_at - timedelta(seconds=self.uptime)


# --- task outcomes (counted by the hook in every process, added up by the monitor) ---

# Upper bounds in seconds of the runtime and queue-wait histograms, and +Inf
# last: the hook's ``BUCKETS`` (a test keeps the two the same).
OUTCOME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
OUTCOME_EVENTS = (
    "sent", "received", "started", "succeeded", "failed", "retried", "rejected", "revoked",
)  # fmt: skip
HISTOGRAMS = ("runtime", "wait")
# A histogram is kept as one counter column per bucket (and a sum), so that the
# monitors add reports up with one statement, concurrently, without locks.
BUCKET_COLUMNS = {
    kind: tuple(f"{kind}_{index}" for index in range(len(OUTCOME_BUCKETS) + 1))
    for kind in HISTOGRAMS
}
COUNTER_COLUMNS = (
    *OUTCOME_EVENTS,
    *(column for kind in HISTOGRAMS for column in (*BUCKET_COLUMNS[kind], f"{kind}_sum")),
)


class TaskOutcomes(models.Model):
    """The counters and histograms of one task name on one queue (abstract)."""

    task = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    for _event in OUTCOME_EVENTS:
        locals()[_event] = models.PositiveBigIntegerField(default=0)
    for _kind in HISTOGRAMS:
        for _column in BUCKET_COLUMNS[_kind]:
            locals()[_column] = models.PositiveBigIntegerField(default=0)
        locals()[f"{_kind}_sum"] = models.FloatField(default=0.0)
    del _event, _kind, _column

    class Meta:
        abstract = True


class TaskMinute(TaskOutcomes):
    """One minute of a task's outcomes: the charts and the task pages read these.
    Kept ``OUTCOMES_MINUTES_DAYS``; ``TaskHour`` keeps the same, coarser, longer."""

    minute = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "task", "queue"], name="task_minute_key")
        ]
        indexes = [models.Index(fields=["minute"], name="task_minute_at")]

    def __str__(self) -> str:
        return f"{self.task} on {self.queue} at {self.minute:%Y-%m-%d %H:%M}"


class TaskHour(TaskOutcomes):
    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "task", "queue"], name="task_hour_key")
        ]
        indexes = [models.Index(fields=["hour"], name="task_hour_at")]

    def __str__(self) -> str:
        return f"{self.task} on {self.queue} at {self.hour:%Y-%m-%d %H}h"


class TaskTotal(TaskOutcomes):
    """Every outcome since the dashboard first heard of the task on this queue
    and worker: the counters and histograms ``/metrics`` exposes. Only ever
    added to, so a worker's restart resets nothing."""

    hostname = models.CharField(max_length=255)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["task", "queue", "hostname"], name="task_total_key")
        ]

    def __str__(self) -> str:
        return f"{self.task} on {self.queue} by {self.hostname}"


class TaskFailureMinute(models.Model):
    """Failures of a task in one minute, by exception type."""

    minute = models.DateTimeField()
    task = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    exception = models.CharField(max_length=255)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["minute", "task", "queue", "exception"], name="task_failure_minute_key"
            )
        ]
        indexes = [models.Index(fields=["minute"], name="task_failure_minute_at")]

    def __str__(self) -> str:
        return f"{self.task}: {self.exception} at {self.minute:%H:%M}"


class TaskFailureTotal(models.Model):
    """Failures of a task on a queue and worker since first heard of, by exception type."""

    task = models.CharField(max_length=255)
    queue = models.CharField(max_length=255)
    hostname = models.CharField(max_length=255)
    exception = models.CharField(max_length=255)
    count = models.PositiveBigIntegerField(default=0)
    last_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "queue", "hostname", "exception"], name="task_failure_total_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.task}: {self.exception} by {self.hostname}"


class OutcomeReporter(models.Model):
    """A process that reports outcomes, and the last of its reports applied:
    a report delivered twice is added up once."""

    process = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField(null=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_report_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.hostname} pid {self.pid}"


# --- beat and fleet hygiene -----------------------------------------------------------


class BeatProcess(models.Model):
    """A ``celery beat`` process that imports the hook, as it last reported itself."""

    # The process's id for its life (pid and a random part), as in its reports.
    process = models.CharField(max_length=64, unique=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField(null=True)
    # The scheduler class, dotted; django_celery_beat's DatabaseScheduler is named.
    scheduler = models.CharField(max_length=255, blank=True)
    database_scheduler = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True)
    first_seen_at = models.DateTimeField()
    last_report_at = models.DateTimeField(db_index=True)
    # Seconds between its reports: it counts as gone after a few missed ones.
    interval = models.FloatField(default=10.0)
    # Set by its last report, sent as it exits.
    stopped_at = models.DateTimeField(null=True)
    last_seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["hostname", "pid"]
        verbose_name_plural = "beat processes"

    def __str__(self) -> str:
        return f"{self.hostname} pid {self.pid}"

    # A beat is alive while its reports keep coming: this many intervals
    # (and a few seconds for a slow broker) may pass between two.
    MISSED_REPORTS = 3

    def alive(self, now: datetime) -> bool:
        if self.stopped_at is not None:
            return False
        allowed = timedelta(seconds=self.interval * self.MISSED_REPORTS + 5)
        return now - self.last_report_at <= allowed


class PeriodicEntry(models.Model):
    """An entry of a beat schedule, as the beat processes that run it reported it."""

    name = models.CharField(max_length=255, unique=True)
    task = models.CharField(max_length=255)
    # The schedule in words: "every 30 seconds", "at 04:00 every day".
    schedule = models.CharField(max_length=255, blank=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    # Its send options (queue, exchange, routing_key, priority, expires).
    options = models.JSONField(default=dict)
    queue = models.CharField(max_length=255, blank=True)
    # True when its arguments are not JSON: shown as reprs, never run from here.
    lossy = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    # As the beat knows them: its last run, its next, its runs since ever.
    last_run_at = models.DateTimeField(null=True)
    next_due = models.DateTimeField(null=True)
    total_run_count = models.PositiveBigIntegerField(default=0)
    # The last send any beat reported, and the task id it sent.
    last_sent_at = models.DateTimeField(null=True)
    last_task_id = models.CharField(max_length=255, blank=True)
    reported_by = models.CharField(max_length=64, blank=True)
    reported_at = models.DateTimeField()
    # Sends of the entry by a second beat while another one sends it too.
    duplicate_sends = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "periodic entries"
        permissions = [("run_periodicentry", "Can send a periodic task now")]

    def __str__(self) -> str:
        return self.name

    def late(self, now: datetime, tolerance: float) -> bool:
        """Its next run is ``tolerance`` seconds overdue and nothing was sent since."""
        if not self.enabled or self.next_due is None:
            return False
        if now - self.next_due <= timedelta(seconds=tolerance):
            return False
        return self.last_sent_at is None or self.last_sent_at < self.next_due


class PeriodicSend(models.Model):
    """How often one beat process sent one entry, and when it last did."""

    entry = models.CharField(max_length=255)
    process = models.CharField(max_length=64)
    sends = models.PositiveBigIntegerField(default=0)
    last_sent_at = models.DateTimeField()
    # How many of its sends are already counted in the entry's duplicate sends.
    duplicates_counted = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["entry", "process"], name="periodic_send_key")
        ]

    def __str__(self) -> str:
        return f"{self.entry} by {self.process}"


class CheckSilence(models.Model):
    """A fleet configuration check an operator silenced for a worker or a queue."""

    SCOPES = (("worker", "worker"), ("queue", "queue"))

    check_name = models.CharField(max_length=64)
    scope = models.CharField(max_length=16, choices=SCOPES)
    # The worker's node name, or the queue's name.
    target = models.CharField(max_length=255)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["check_name", "scope", "target"], name="check_silence_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.check_name} silenced for {self.scope} {self.target}"


class UserPreference(models.Model):
    """How one person likes the pages: the theme, for now."""

    class Theme(models.TextChoices):
        SYSTEM = "system", "System"
        LIGHT = "light", "Light"
        DARK = "dark", "Dark"

    user = models.OneToOneField("auth.User", on_delete=models.CASCADE, related_name="preference")
    # "system" follows the browser's prefers-color-scheme.
    theme = models.CharField(max_length=16, choices=Theme.choices, default=Theme.SYSTEM)

    def __str__(self) -> str:
        return f"{self.user} prefers the {self.theme} theme"

    @property
    def next_theme(self) -> str:
        return next_theme(self.theme)


def next_theme(theme: str) -> str:
    """The theme the header's button switches to: system, light, dark, and round."""
    order = list(UserPreference.Theme.values)
    return order[(order.index(theme) + 1) % len(order)] if theme in order else order[0]


class ApiToken(models.Model):
    """A secret that lets a program call ``/api/v1/`` as its user, with the user's roles.

    Only the SHA-256 of the secret is stored: the secret is shown once, when
    ``manage.py api_token`` makes it. The prefix is its first characters, kept
    so that a person can tell their tokens apart without the secret.
    """

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="apitoken_user_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…) of {self.user}"


class TaskSearch(models.Model):
    """An operator's request to read whole queues for one task id ("where is task
    X?" beyond the bounded read of the page). The monitor scans a slice at a time
    and keeps its place here; one open request per id, so a double click is one scan.
    Pruned a day after it was asked for."""

    task_id = models.CharField(max_length=255, db_index=True)
    requested_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    # The queues to read, fixed when the scan starts, and where it resumes
    # (``dashboard.broker.waiting.ScanPlace`` as a dict).
    queues = models.JSONField(default=list)
    place = models.JSONField(default=dict)
    # Messages in those queues when the scan started, and read so far.
    total = models.PositiveBigIntegerField(null=True)
    scanned = models.PositiveBigIntegerField(default=0)
    found_in_queue = models.CharField(max_length=255, blank=True)
    found_priority = models.PositiveIntegerField(null=True)
    # Messages between it and the consumer end of its list, when it was found.
    position = models.PositiveBigIntegerField(null=True)
    error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task_id"],
                condition=models.Q(finished_at__isnull=True),
                name="task_search_one_open",
            )
        ]

    def __str__(self) -> str:
        return f"scan for {self.task_id} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.finished_at is None

    @property
    def state(self) -> str:
        """pending, scanning, found, not_found or error."""
        if self.finished_at is None:
            return "pending" if self.started_at is None else "scanning"
        if self.error:
            return "error"
        return "found" if self.found_in_queue else "not_found"
