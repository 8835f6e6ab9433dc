"""What the API reads and answers, as types: the OpenAPI schema and the 422s come from these."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from django.urls import reverse
from ninja import Schema
from pydantic import AfterValidator, Field, StringConstraints

from dashboard.broker.waiting import QueueRead, Waiting
from dashboard.http import MAX_ID
from dashboard.periodic.selectors import EntryRow
from dashboard.queues.selectors import QueueRow
from dashboard.tasks.lookup import QueueStory, TaskMatch, TaskStory, lookup_url
from deadletters import bulk, selectors
from deadletters.models import BulkAction, DeadLetter
from deadletters.redact import redact, redacted_raw
from deadletters.selectors import requeue_chain

# NUL and lone surrogates: valid in JSON as escapes, refused by PostgreSQL and UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: str) -> str:
    if _UNSTORABLE.search(value):
        raise ValueError("holds a NUL or a lone surrogate, which no database stores")
    return value


Id = Annotated[int, Field(ge=1, le=MAX_ID)]
# A queue, worker, task or entry name: what the name columns hold.
Name = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_storable)]
# The same, or nothing: an optional filter.
NameOrEmpty = Annotated[str, StringConstraints(max_length=255), AfterValidator(_storable)]
Reason = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_storable)]


# --- errors ------------------------------------------------------------------------


class Error(Schema):
    """Every 4xx and 5xx but a 422: what went wrong, in words."""

    detail: str


class FieldError(Schema):
    loc: list[str | int] = Field(description='Where: ["query", "state"], ["body", "reason"]...')
    msg: str
    type: str


class ValidationFailed(Schema):
    """422: one entry per field that is wrong, and why."""

    detail: list[FieldError]


class Conflict(Schema):
    """409: the row was handled already (by whom, when), or the action is not allowed now."""

    detail: str
    state: str | None = None
    handled_by: str | None = None
    handled_at: datetime | None = None


# --- dead letters ------------------------------------------------------------------

State = Literal["open", "requeued", "discarded"]
Range = Literal["15m", "1h", "24h", "7d"]


class DeadLetterFilters(Schema):
    """The console's filters, by the same names as its URL's query string."""

    q: str | None = Field(None, description="Free text: task id, message, args, kwargs.")
    state: State | None = None
    task: str | None = None
    queue: str | None = None
    exception: str | None = Field(None, description="Exception type.")
    signature: str | None = Field(None, description="A failure group's signature.")
    worker: str | None = None
    range: Range | None = Field(None, description="Failed in the last...")
    since: datetime | None = Field(None, description="Failed at or after (ISO 8601).")
    until: datetime | None = Field(None, description="Failed before (ISO 8601).")


class DeadLetterRow(Schema):
    id: int
    task_id: str
    task_name: str
    queue: str
    state: State
    kind: str
    exception_type: str
    exception_message: str
    signature: str
    worker: str
    retries: int
    failed_at: datetime
    requeue_task_id: str
    requeue_outcome: str
    bulk_action_id: int | None


class DeadLetterPage(Schema):
    items: list[DeadLetterRow]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next (older) page; null on the last."
    )


class DeadLetterDetail(DeadLetterRow):
    """One dead letter as its page shows it: args, kwargs and headers redacted."""

    args: Any
    kwargs: Any
    headers: Any
    traceback: str
    exchange: str
    routing_key: str
    priority: int | None
    root_id: str
    parent_id: str
    group_id: str
    received_at: datetime
    lossy: bool
    quarantine_reason: str
    ingest_notes: str
    requeue_blocker: str
    requeued_at: datetime | None
    requeued_by: str | None
    discarded_at: datetime | None
    discarded_by: str | None
    requeued_from_id: int | None
    requeue_chain: list[int] = Field(description="This failure's requeues by id, oldest first.")
    raw: str | None = Field(
        description="The raw message: as redacted JSON, or (only with view_raw_deadletter)"
        " its first bytes when it is not JSON; null when there is none or it may not be read."
    )

    @staticmethod
    def resolve_args(row: DeadLetter) -> Any:
        return redact(row.args)

    @staticmethod
    def resolve_kwargs(row: DeadLetter) -> Any:
        return redact(row.kwargs)

    @staticmethod
    def resolve_headers(row: DeadLetter) -> Any:
        return redact(row.headers)

    @staticmethod
    def resolve_requeued_by(row: DeadLetter) -> str | None:
        return row.requeued_by.get_username() if row.requeued_by else None

    @staticmethod
    def resolve_discarded_by(row: DeadLetter) -> str | None:
        return row.discarded_by.get_username() if row.discarded_by else None

    @staticmethod
    def resolve_requeue_chain(row: DeadLetter) -> list[int]:
        return [r.pk for r in requeue_chain(row)]

    @staticmethod
    def resolve_raw(row: DeadLetter, context: dict[str, Any]) -> str | None:
        raw = redacted_raw(row.raw_body)
        # Bytes that are not JSON cannot be redacted: for those who may read them.
        may_read = context["request"].user.has_perm("deadletters.view_raw_deadletter")
        if raw is None and row.raw_body and may_read:
            return row.raw_text
        return raw


class Requeued(Schema):
    id: int
    state: State
    new_task_id: str


class Discarded(Schema):
    id: int
    state: State


class ActionIn(Schema):
    reason: Reason = ""


class EditRequeueIn(Schema):
    """Edit, then requeue. Values shown as "[redacted]" that are sent back unchanged
    keep their stored value."""

    args: list[Any]
    kwargs: dict[str, Any]
    queue: Name
    reason: Reason = ""


class GroupRow(Schema):
    signature: str
    name: str = Field(description="Its task and exception, as the pages name it.")
    task_name: str
    exception_type: str
    message: str
    queue: str
    open: int
    total: int
    first_seen: datetime
    last_seen: datetime


class GroupPage(Schema):
    items: list[GroupRow]
    next_offset: int | None = Field(description="Pass as ?offset= for the next page.")


# --- bulk actions ------------------------------------------------------------------


class BulkIn(Schema):
    """Requeue or discard many: the ticked ``ids``, or every open row the ``filter`` matches."""

    action: Literal["requeue", "discard"]
    reason: Reason = Field(description="Goes into the audit.")
    ids: list[Id] | None = Field(None, max_length=10_000)
    filter: DeadLetterFilters | None = None
    confirm: str = Field(
        "",
        max_length=40,
        description="Above DEADLETTERS_CONFIRM_ABOVE rows: the number of rows, as the 422 said.",
    )
    max_id: int | None = Field(
        None, ge=0, le=MAX_ID, description="The max_id the confirmation 422 gave back."
    )
    skip_canary: bool = False
    rate: float | None = Field(None, description="Messages a second at the most.")


class Outcomes(Schema):
    succeeded: int
    failed: int
    retrying: int
    not_run: int


class BulkOut(Schema):
    id: int
    action: str
    state: str
    state_display: str
    scope: str
    reason: str
    created_at: datetime
    created_by: str | None
    approved_by: str | None
    total: int
    done: int
    skipped: int
    failed: int
    unconfirmed: int
    processed: int
    percent: int
    finished: bool
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str
    verdict: str
    rate: float | None
    outcomes: Outcomes | None = Field(description="What became of the requeued tasks.")
    failed_again: list[dict[str, Any]] = Field(
        description="The groups the requeued tasks fell into when they failed again."
    )

    @staticmethod
    def resolve_state_display(action: BulkAction) -> str:
        return action.get_state_display()

    @staticmethod
    def resolve_scope(action: BulkAction) -> str:
        return bulk.named_scope(action)

    @staticmethod
    def resolve_created_by(action: BulkAction) -> str | None:
        return action.created_by.get_username() if action.created_by else None

    @staticmethod
    def resolve_approved_by(action: BulkAction) -> str | None:
        return action.approved_by.get_username() if action.approved_by else None

    @staticmethod
    def resolve_finished(action: BulkAction) -> bool:
        return action.is_finished

    @staticmethod
    def resolve_outcomes(action: BulkAction) -> Outcomes | None:
        if action.action != BulkAction.Action.REQUEUE:
            return None
        o = selectors.requeue_outcomes(action)
        return Outcomes(
            succeeded=o.succeeded, failed=o.failed, retrying=o.retrying, not_run=o.not_run
        )

    @staticmethod
    def resolve_failed_again(action: BulkAction) -> list[dict[str, Any]]:
        if action.action != BulkAction.Action.REQUEUE:
            return []
        return selectors.failed_again_groups(action)


# --- queues and workers --------------------------------------------------------------


class QueueOut(Schema):
    name: str
    exists: bool
    depth: int | None
    ready: int | None
    unacked: int | None
    oldest_age: float | None = Field(description="Seconds the oldest message has waited.")
    in_rate: float | None = Field(description="Messages a second in.")
    out_rate: float | None
    broker_consumers: int | None
    consumers: list[str]
    sampled_at: datetime | None
    paused: bool
    paused_by: str | None
    paused_at: datetime | None

    @staticmethod
    def resolve_paused(row: QueueRow) -> bool:
        return row.paused is not None

    @staticmethod
    def resolve_paused_by(row: QueueRow) -> str | None:
        return (row.paused.username or None) if row.paused else None

    @staticmethod
    def resolve_paused_at(row: QueueRow) -> datetime | None:
        return row.paused.paused_at if row.paused else None


class QueueList(Schema):
    items: list[QueueOut]
    sampled_age: float | None = Field(description="Seconds since the monitor last sampled.")
    stale: bool


class Replies(Schema):
    """What the workers answered to a control command."""

    command: str
    ok: dict[str, str]
    errors: dict[str, str]
    summary: str


class PurgeIn(Schema):
    confirm: str = Field(description="The queue's name, typed: what the page asks for.")


class Purged(Schema):
    queue: str
    purged: int


class WorkerOut(Schema):
    hostname: str
    online: bool
    last_seen_at: datetime
    pid: int | None
    sw_ver: str
    pool: str
    pool_size: int | None
    concurrency: int | None
    autoscale_max: int | None
    autoscale_min: int | None
    prefetch_count: int | None
    active_count: int
    reserved_count: int
    scheduled_count: int
    processed: int
    uptime: int | None
    queues: list[Any]


class WorkerDetail(WorkerOut):
    loadavg: list[Any]
    active: list[Any]
    reserved: list[Any]
    scheduled: list[Any]
    registered: list[Any]


class WorkerList(Schema):
    items: list[WorkerOut]
    sampled_age: float | None
    stale: bool


class PoolIn(Schema):
    action: Literal["grow", "shrink"]
    n: int = Field(1, ge=1, le=100)


class AutoscaleIn(Schema):
    max: int = Field(ge=1, le=10_000)
    min: int = Field(ge=0, le=10_000)


class RevokeIn(Schema):
    task_id: Name
    terminate: bool = False


# --- periodic, audit, overview ----------------------------------------------------------


class PeriodicOut(Schema):
    """An entry of beat's schedule, from its row of the periodic page."""

    name: str = Field(alias="entry.name")
    task: str = Field(alias="entry.task")
    schedule: str = Field(alias="entry.schedule")
    queue: str = Field(alias="entry.queue")
    enabled: bool = Field(alias="entry.enabled")
    last_sent_at: datetime | None = Field(alias="entry.last_sent_at")
    next_due: datetime | None = Field(alias="entry.next_due")
    last_task_id: str = Field(alias="entry.last_task_id")
    late: bool
    duplicate: bool
    senders: list[str] = Field(description="The beat processes that send it now.")

    @staticmethod
    def resolve_senders(row: EntryRow) -> list[str]:
        return [f"{beat.hostname} pid {beat.pid}" for beat in row.senders]


class PeriodicList(Schema):
    items: list[PeriodicOut]
    beat_down: bool


class RunNowIn(Schema):
    token: str = Field(
        pattern=r"^[A-Za-z0-9-]{8,64}$",
        description="Any 8 to 64 letters, digits or dashes, new for each run: a retry"
        " with the same token within an hour sends nothing (409).",
    )


class RunNowOut(Schema):
    name: str
    task_id: str


class AuditOut(Schema):
    id: int
    at: datetime
    username: str
    action: str
    target_type: str
    target_ids: list[Any]
    target_filter: str
    count: int
    reason: str
    details: dict[str, Any]


class AuditPage(Schema):
    items: list[AuditOut]
    next_cursor: str | None


class OverviewOut(Schema):
    level: str = Field(description="healthy, degraded or failing, as every page's title says.")
    word: str
    open_dead_letters: int
    reasons: list[dict[str, str]]
    verdicts: dict[str, dict[str, str]] = Field(description="Each tile's verdict.")


# --- "where is task X?" ---------------------------------------------------------------


class TaskBackendOut(Schema):
    """What the result backend says, read with this request; redacted as the page shows it."""

    configured: bool = Field(description="A result backend is configured on the dashboard.")
    backend: str = Field(description="Its kind (the URL's scheme), never its address.")
    read: bool
    note: str = Field(description="Why it was not read, or what it cannot know.")
    read_at: datetime | None
    known: bool = Field(description='False for PENDING: Celery\'s "no record of this id".')
    state: str
    date_done: datetime | None
    result: str | None = Field(description='The result as JSON text, sensitive keys "[redacted]".')
    exception_type: str
    exception_message: str
    traceback: str
    name: str = Field(description="Stored only with the workers' result_extended, as the next.")
    worker: str
    queue: str
    retries: int | None
    args: str | None
    kwargs: str | None
    children: list[str]


class TaskDeadLetterOut(Schema):
    """A failure in the task's requeue chain."""

    id: int = Field(alias="pk")
    page: str = Field(alias="url", description="Its page.")
    task_id: str
    task_name: str
    queue: str
    kind: str
    exception_type: str
    exception_message: str
    failed_at: datetime
    worker: str
    state: State
    is_this_task: bool = Field(description="The looked-up task's own failure.")
    requeue_task_id: str
    requeued_at: datetime | None
    requeued_by: str
    requeue_outcome: str = Field(description="What became of the requeue, as its worker said.")
    requeue_outcome_at: datetime | None
    discarded_at: datetime | None
    discarded_by: str
    requeueable: bool
    requeue_blocker: str


class TaskDeadLettersOut(Schema):
    read_at: datetime
    chain: list[TaskDeadLetterOut] = Field(
        description="The failures across requeues, oldest first; empty: it never failed for good."
    )
    requeued_from: TaskDeadLetterOut | None = Field(
        description="The dead letter whose requeue this task is."
    )


class TaskSightingOut(Schema):
    worker: str
    online: bool
    kind: Literal["active", "reserved", "scheduled"]
    name: str
    seen_at: datetime = Field(description="When that worker answered the monitor.")
    started: datetime | None
    eta: str
    queue: str


class TaskSnapshotOut(Schema):
    """The workers' last snapshot, as the monitor stored it: not read live."""

    sampled_at: datetime | None = Field(description="null: the monitor never sampled.")
    workers: int
    sightings: list[TaskSightingOut]
    cut: list[str] = Field(
        description="Workers with more tasks in a list than the snapshot keeps: the task may"
        " be among those not kept."
    )


class TaskWaitingOut(Schema):
    queue: str
    priority: int
    ahead: int = Field(description="Messages between it and the consumer, when it was read.")
    name: str
    eta: str | None
    sent_at: float | None = Field(description="The publish stamp x_sent_at, epoch seconds.")


class TaskQueueReadOut(Schema):
    queue: str
    total: int = Field(description="Messages in its lists when the search began.")
    read: int
    complete: bool = Field(description="Every list read to its end.")


class TaskQueuesOut(Schema):
    """A bounded search of the queues, read with this request (Redis only)."""

    searched_at: datetime
    per_queue: int = Field(description="Messages read of each queue at most.")
    in_all: int = Field(description="Messages read of all queues at most.")
    searchable: bool = Field(description="False on RabbitMQ: it cannot be read without consuming.")
    reason: str = Field(description="Why it could not search, or stopped short.")
    found: list[TaskWaitingOut]
    queues: list[TaskQueueReadOut]
    unread: list[str] = Field(description="Queues not read: the search had read in_all already.")
    complete: bool = Field(description="Every message of every known queue was read.")
    cut_short: bool = Field(
        description="Not found and not everything was read: it may still wait in what was not"
        " (the page offers a full scan in the monitor)."
    )

    @staticmethod
    def resolve_searchable(q: QueueStory) -> bool:
        return q.search.searchable

    @staticmethod
    def resolve_reason(q: QueueStory) -> str:
        return q.search.reason

    @staticmethod
    def resolve_found(q: QueueStory) -> list[Waiting]:
        return q.search.found

    @staticmethod
    def resolve_queues(q: QueueStory) -> list[QueueRead]:
        return q.search.queues

    @staticmethod
    def resolve_unread(q: QueueStory) -> list[str]:
        return q.search.unread

    @staticmethod
    def resolve_complete(q: QueueStory) -> bool:
        return q.search.complete

    @staticmethod
    def resolve_cut_short(q: QueueStory) -> bool:
        return q.offers_scan


class TaskStoryOut(Schema):
    """Everything the dashboard knows of one task id, each source with when it was read."""

    task_id: str
    looked_up_at: datetime
    summary: str = Field(description="Where it is, in one line, from the most telling source.")
    running: bool
    waiting: bool
    page: str = Field(description="The lookup page.")
    backend: TaskBackendOut
    dead_letters: TaskDeadLettersOut
    snapshot: TaskSnapshotOut
    queues: TaskQueuesOut

    @staticmethod
    def resolve_page(story: TaskStory) -> str:
        return lookup_url(story.task_id)


class TaskMatchOut(Schema):
    task_id: str
    name: str
    source: Literal["dead letter", "worker snapshot"]
    seen_at: datetime | None
    url: str = Field(description="Its lookup in this API.")
    page: str = Field(description="Its lookup page.")

    @staticmethod
    def resolve_url(match: TaskMatch) -> str:
        return reverse("api:task_story", args=[match.task_id])

    @staticmethod
    def resolve_page(match: TaskMatch) -> str:
        return lookup_url(match.task_id)


class TaskMatches(Schema):
    items: list[TaskMatchOut]
    limited: bool = Field(description="There may be more: give more of the id.")
