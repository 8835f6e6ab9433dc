"""Where is task X? Everything the dashboard can read about one task id.

``task_story(task_id)`` reads each source once and returns plain dataclasses
(pages, the API and the command line serialise the same answer):

- the result backend of the site's Celery app (``CELERY_RESULT_BACKEND``), when
  one is configured: one read of the task's meta (a GET on Redis, a row on a
  database backend: django-celery-results' through the ``results`` alias, see
  ``dashboard.dbrouters``); JSON only, never pickle;
- the dead letters: the task's rows by id and by requeue id (indexed), and
  their requeue chain before and after (one recursive query);
- the workers' last snapshot, as the monitor stored it: every worker's active,
  reserved and scheduled lists (at most ``control.TASK_LIST_LIMIT`` each);
- the queues, on Redis only: a bounded read of their lists
  (``dashboard.broker.waiting``: at most 10,000 messages a queue, 50,000 in all);
  the rest is read in the monitor on request (``dashboard.tasks.queue_scan``).

``task_matches(prefix)`` finds ids that start with a prefix of at least
``MIN_PREFIX`` characters, in the dead letters and the snapshot: the backend and
the queues can only be asked for a whole id.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from celery import states
from celery.backends.base import DisabledBackend
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from kombu.exceptions import ContentDisallowed as Disallowed
from kombu.exceptions import DecodeError

from dashboard.broker import waiting
from dashboard.celery import app
from dashboard.models import CollectorStatus, QueueSnapshot, WorkerSnapshot
from deadletters.models import DeadLetter
from deadletters.redact import redact
from deadletters.selectors import requeue_chain

MIN_PREFIX = 8
MAX_ID = 255
# Results and tracebacks longer than this are cut for the page.
SHOWN_CHARS = 20_000
MATCHES_SHOWN = 50
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
JSON_ONLY = frozenset({"application/json"})


class InvalidTaskId(ValueError):
    """A task id (or prefix) that cannot be looked up; ``field`` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def clean_task_id(raw: str | None, *, field: str = "q", prefix: bool = False) -> str:
    """A task id as given (trimmed), or ``InvalidTaskId``. A prefix needs ``MIN_PREFIX``
    characters: a shorter one would match half the table."""
    text = (raw or "").strip()
    if not text:
        raise InvalidTaskId(field, "give a task id")
    if len(text) > MAX_ID:
        raise InvalidTaskId(field, f"a task id has at most {MAX_ID} characters")
    # NUL: no task id holds one, and PostgreSQL cannot compare text with it.
    if "\x00" in text or not text.isprintable():
        raise InvalidTaskId(field, "a task id holds no control characters")
    if prefix and len(text) < MIN_PREFIX:
        raise InvalidTaskId(field, f"give at least {MIN_PREFIX} characters of the task id")
    return text


def linkable(task_id: str) -> bool:
    """An id that a lookup page can have (children, matches: read from outside)."""
    try:
        return clean_task_id(task_id) == task_id
    except InvalidTaskId:
        return False


def looks_whole(task_id: str) -> bool:
    """A Celery task id as Celery makes them (a UUID): a search goes straight to it."""
    return bool(UUID.fullmatch(task_id))


# --- the result backend ---------------------------------------------------------------


@dataclass(frozen=True)
class BackendStory:
    """What the result backend says of the task, or why it was not asked."""

    configured: bool
    # The backend's kind (its URL's scheme): never its address or credentials.
    backend: str = ""
    read: bool = False
    # Why it was not read, or what it cannot know.
    note: str = ""
    read_at: datetime | None = None
    # False for PENDING: Celery's word for "no record of this id".
    known: bool = False
    state: str = ""
    date_done: datetime | None = None
    # Redacted, as JSON text.
    result: str | None = None
    exception_type: str = ""
    exception_message: str = ""
    traceback: str = ""
    # Stored only with ``result_extended`` on the workers.
    name: str = ""
    worker: str = ""
    queue: str = ""
    retries: int | None = None
    args: str | None = None
    kwargs: str | None = None
    children: list[str] = field(default_factory=list)


def result_backend() -> Any:
    """The site app's result backend, or None when none is configured (the seam)."""
    if not app.conf.result_backend:
        return None
    backend = app.backend
    return None if isinstance(backend, DisabledBackend) else backend


def _backend_kind() -> str:
    url = str(app.conf.result_backend or "")
    return (urlsplit(url).scheme or url.split(":", 1)[0])[:40]


def _pretty(value: Any) -> str:
    try:
        text = json.dumps(redact(value), indent=2, ensure_ascii=False, default=str)
    except (RecursionError, ValueError):
        return "(nested too deeply to show)"
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n… (cut)"


def _plain(value: Any) -> Any:
    """Tuples as lists, at any depth: redaction walks lists and dicts."""
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def shown_arguments(value: Any) -> str:
    """Arguments as the backend stored them, redacted. django-celery-results keeps
    the worker's reprs (``argsrepr``, ``kwargsrepr``): read back as Python literals
    (never evaluated) they are redacted like any value; a repr that is no literal
    (cut, or of an object) is shown only when it names no sensitive key."""
    if not isinstance(value, str):
        return _pretty(_plain(value))
    try:
        parsed = ast.literal_eval(value) if len(value) <= SHOWN_CHARS else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if isinstance(parsed, list | tuple | dict):
        return _pretty(_plain(parsed))
    if redact({value: None}) != {value: None}:
        return "(stored as a repr that names a sensitive key: not shown)"
    return value[:SHOWN_CHARS]


def _moment(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)


def _child_ids(children: Any) -> list[str]:
    """Ids of the children as a backend stores them (serialised results: nested
    ``[[id, parent], None]`` tuples, or group results); anything else is skipped."""
    found: list[str] = []

    def walk(item: Any, depth: int) -> None:
        if depth > 4 or len(found) >= 100:
            return
        if isinstance(item, list | tuple) and item:
            if isinstance(item[0], str):
                if linkable(item[0]):
                    found.append(item[0])
            else:
                walk(item[0], depth + 1)

    for child in children if isinstance(children, list | tuple) else []:
        walk(child, 0)
    return found


def backend_story(task_id: str) -> BackendStory:
    backend = result_backend()
    if backend is None:
        return BackendStory(
            configured=False,
            note="No result backend is configured on the dashboard (CELERY_RESULT_BACKEND): "
            "whether the task ran, and what it returned, cannot be known here.",
        )
    kind = _backend_kind()
    accept = set(getattr(backend, "accept", None) or ())
    if not accept <= JSON_ONLY:
        return BackendStory(
            configured=True,
            backend=kind,
            note="The dashboard's Celery app accepts results in "
            f"{', '.join(sorted(accept - JSON_ONLY))}; it reads JSON only, so the backend "
            "was not read (set CELERY_RESULT_ACCEPT_CONTENT to json).",
        )
    read_at = timezone.now()
    try:
        meta = backend.get_task_meta(task_id, cache=False)
    except Exception as exc:  # any backend, any failure: the page says it, never a 500
        # A team's pickled result fails to decode as JSON: it is never unpickled.
        not_json = isinstance(exc, Disallowed | DecodeError | ValueError)
        reason = "stored as something other than JSON" if not_json else exc
        return BackendStory(
            configured=True, backend=kind, read_at=read_at,
            note=f"The result backend could not be read: {reason}",
        )  # fmt: skip
    meta = meta if isinstance(meta, dict) else {}
    state = str(meta.get("status") or states.PENDING)
    if state == states.PENDING:
        return BackendStory(
            configured=True, backend=kind, read=True, read_at=read_at, state=state,
            note="Unknown to the backend: never sent, still waiting, running without "
            "task_track_started, its result expired or ignored, or sent elsewhere.",
        )  # fmt: skip
    result = meta.get("result")
    exception_type = exception_message = ""
    shown: str | None = None
    worker = str(meta.get("worker") or "")
    if isinstance(result, BaseException):
        exception_type = type(result).__name__
        exception_message = str(result)[:SHOWN_CHARS]
    elif state == states.STARTED and isinstance(result, dict):
        worker = worker or str(result.get("hostname") or "")
    elif result is not None:
        shown = _pretty(result)
    retries = meta.get("retries")
    return BackendStory(
        configured=True,
        backend=kind,
        read=True,
        read_at=read_at,
        known=True,
        state=state,
        date_done=_moment(meta.get("date_done")),
        result=shown,
        exception_type=exception_type,
        exception_message=exception_message,
        traceback=str(meta.get("traceback") or "")[:SHOWN_CHARS],
        # django-celery-results' rows name it task_name.
        name=str(meta.get("name") or meta.get("task_name") or "")[:MAX_ID],
        worker=worker[:MAX_ID],
        queue=str(meta.get("queue") or "")[:MAX_ID],
        retries=retries if isinstance(retries, int) else None,
        args=shown_arguments(meta["args"]) if meta.get("args") is not None else None,
        kwargs=shown_arguments(meta["kwargs"]) if meta.get("kwargs") is not None else None,
        children=_child_ids(meta.get("children")),
    )


# --- the dead letters -----------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetterStep:
    """One failure in the task's requeue chain."""

    pk: int
    url: str
    task_id: str
    task_name: str
    queue: str
    kind: str
    exception_type: str
    exception_message: str
    failed_at: datetime
    worker: str
    state: str
    # This row is the looked-up task's own failure.
    is_this_task: bool
    requeue_task_id: str = ""
    requeued_at: datetime | None = None
    requeued_by: str = ""
    # What became of the requeue, as the worker reported (succeeded, failed, retried).
    requeue_outcome: str = ""
    requeue_outcome_at: datetime | None = None
    discarded_at: datetime | None = None
    discarded_by: str = ""
    requeueable: bool = False
    requeue_blocker: str = ""


@dataclass(frozen=True)
class DeadLetterStory:
    read_at: datetime
    # The chain across requeues, oldest first; empty when the task never failed for good.
    chain: list[DeadLetterStep] = field(default_factory=list)
    # The dead letter whose requeue this task is, when it is one.
    requeued_from: DeadLetterStep | None = None

    @property
    def own(self) -> DeadLetterStep | None:
        return next((step for step in self.chain if step.is_this_task), None)


def _step(row: DeadLetter, task_id: str) -> DeadLetterStep:
    requeued = row.state == DeadLetter.State.REQUEUED
    discarded = row.state == DeadLetter.State.DISCARDED
    return DeadLetterStep(
        pk=row.pk,
        url=row.get_absolute_url(),
        task_id=row.task_id,
        task_name=row.task_name,
        queue=row.queue,
        kind=row.get_kind_display(),
        exception_type=row.exception_type,
        exception_message=row.exception_message[:SHOWN_CHARS],
        failed_at=row.failed_at,
        worker=row.worker,
        state=row.state,
        is_this_task=row.task_id == task_id,
        requeue_task_id=row.requeue_task_id,
        requeued_at=row.requeued_at,
        requeued_by=row.handled_by if requeued else "",
        requeue_outcome=row.requeue_outcome,
        requeue_outcome_at=row.requeue_outcome_at,
        discarded_at=row.discarded_at,
        discarded_by=row.handled_by if discarded else "",
        requeueable=row.is_requeueable,
        requeue_blocker=row.requeue_blocker if row.is_open else "",
    )


def dead_letter_story(task_id: str) -> DeadLetterStory:
    read_at = timezone.now()
    related = DeadLetter.objects.select_related("requeued_by", "discarded_by")
    own = related.filter(task_id=task_id).order_by("-id").first()
    parent = related.filter(requeue_task_id=task_id).order_by("-id").first()
    start = own or parent
    if start is None:
        return DeadLetterStory(read_at)
    chain = [_step(row, task_id) for row in requeue_chain(start)]
    return DeadLetterStory(
        read_at, chain=chain, requeued_from=_step(parent, task_id) if parent else None
    )


# --- the workers' last snapshot ---------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """The task in one worker's list, as the monitor last sampled it."""

    worker: str
    online: bool
    # active (running), reserved (prefetched) or scheduled (held for its eta).
    kind: str
    name: str
    seen_at: datetime
    started: datetime | None = None
    eta: str = ""
    queue: str = ""


@dataclass(frozen=True)
class SnapshotStory:
    # When the monitor last heard from the workers; None: never.
    sampled_at: datetime | None
    workers: int = 0
    sightings: list[Sighting] = field(default_factory=list)
    # Workers with more tasks in a list than the snapshot keeps: the task may be
    # among those not kept.
    cut: list[str] = field(default_factory=list)


KINDS = ("active", "reserved", "scheduled")


def _snapshot_rows() -> Iterable[WorkerSnapshot]:
    return WorkerSnapshot.objects.only(
        "hostname", "online", "last_seen_at", "queues", *KINDS,
        *(f"{kind}_count" for kind in KINDS),
    ).order_by("hostname")  # fmt: skip


def _sampled_at() -> datetime | None:
    status = CollectorStatus.objects.filter(name="workers").first()
    return status.last_success_at if status else None


def snapshot_story(task_id: str) -> SnapshotStory:
    sightings, cut, workers = [], [], 0
    for worker in _snapshot_rows():
        workers += 1
        for kind in KINDS:
            tasks = getattr(worker, kind) or []
            if getattr(worker, f"{kind}_count") > len(tasks):
                cut.append(worker.hostname)
            for task in tasks:
                if isinstance(task, dict) and task.get("id") == task_id:
                    sightings.append(_sighting(worker, kind, task))
    return SnapshotStory(_sampled_at(), workers, sightings, sorted(set(cut)))


def _sighting(worker: WorkerSnapshot, kind: str, task: dict[str, Any]) -> Sighting:
    started = task.get("started")
    return Sighting(
        worker=worker.hostname,
        online=worker.online,
        kind=kind,
        name=str(task.get("name") or ""),
        seen_at=worker.last_seen_at,
        started=(
            datetime.fromtimestamp(started, UTC) if isinstance(started, int | float) else None
        ),
        eta=str(task.get("eta") or ""),
        queue=str(task.get("queue") or ""),
    )


# --- the queues ----------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStory:
    searched_at: datetime
    search: waiting.WaitingSearch
    per_queue: int = waiting.PER_QUEUE
    in_all: int = waiting.IN_ALL

    @property
    def offers_scan(self) -> bool:
        """Cut short without finding it: the monitor may read the rest."""
        search = self.search
        return search.searchable and not search.found and not search.complete


def known_queues(*hints: str) -> list[str]:
    """The queues to search: those named by what is known of the task first, then
    every queue the monitor knows (sampled, or consumed by a worker)."""
    names = [hint for hint in hints if hint]
    names += (
        QueueSnapshot.objects.filter(exists=True).order_by("name").values_list("name", flat=True)
    )
    for queues in WorkerSnapshot.objects.values_list("queues", flat=True):
        names += [str(q) for q in queues or [] if isinstance(q, str)]
    return list(dict.fromkeys(names))


def queue_story(task_id: str, hints: Iterable[str] = ()) -> QueueStory:
    searched_at = timezone.now()
    # The bounds as the module has them now (a test may lower them).
    per_queue, in_all = waiting.PER_QUEUE, waiting.IN_ALL
    search = waiting.find_waiting(task_id, known_queues(*hints), per_queue=per_queue, in_all=in_all)
    return QueueStory(searched_at, search, per_queue, in_all)


# --- all of it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskStory:
    """Everything known about one task id, each source with when it was read."""

    task_id: str
    looked_up_at: datetime
    backend: BackendStory
    dead_letters: DeadLetterStory
    snapshot: SnapshotStory
    queues: QueueStory
    # Where it is, in one line, from the most telling source.
    summary: str = ""

    @property
    def running(self) -> bool:
        return any(s.kind == "active" for s in self.snapshot.sightings) or (
            self.backend.state == states.STARTED
        )

    @property
    def waiting(self) -> bool:
        return bool(self.queues.search.found) or any(
            s.kind != "active" for s in self.snapshot.sightings
        )

    @property
    def revocable(self) -> bool:
        return self.running or self.waiting


STATE_WORDS = {
    states.SUCCESS: "Succeeded",
    states.FAILURE: "Failed",
    states.REVOKED: "Revoked",
    states.STARTED: "Started",
    states.RETRY: "Failed, to be retried",
    states.RECEIVED: "Received by a worker",
}


def _summary(story: TaskStory) -> str:
    for sighting in story.snapshot.sightings:
        if sighting.kind == "active":
            return f"Running on {sighting.worker} (as of the last worker snapshot)."
    for found in story.queues.search.found:
        return f"Waiting in queue {found.queue}, {found.ahead:,} messages ahead of it."
    for sighting in story.snapshot.sightings:
        if sighting.kind == "reserved":
            return f"Prefetched by {sighting.worker}, waiting for a free process."
        return f"Held by {sighting.worker} until its eta {sighting.eta}."
    backend = story.backend
    own = story.dead_letters.own
    if own is not None and own.state == DeadLetter.State.REQUEUED:
        why = own.exception_type or own.kind
        return f"Failed for good ({why}); requeued as {own.requeue_task_id}."
    if own is not None:
        verb = "open dead letter" if own.state == DeadLetter.State.OPEN else "discarded"
        return f"Failed for good ({own.exception_type or own.kind}): {verb}."
    if backend.known:
        done = f" at {backend.date_done:%Y-%m-%d %H:%M:%S %Z}" if backend.date_done else ""
        said = STATE_WORDS.get(backend.state, backend.state.capitalize())
        return f"{said}{done}, says the result backend."
    if story.dead_letters.requeued_from is not None:
        return "A requeue of a dead letter; nothing more is known of it."
    return "Nothing known about this id."


def task_story(task_id: str) -> TaskStory:
    """Everything known about ``task_id`` (a whole id, as ``clean_task_id`` returns it)."""
    now = timezone.now()
    dead_letters = dead_letter_story(task_id)
    snapshot = snapshot_story(task_id)
    backend = backend_story(task_id)
    hints = [step.queue for step in dead_letters.chain if step.is_this_task]
    hints += [s.queue for s in snapshot.sightings] + [backend.queue]
    if dead_letters.requeued_from is not None:
        hints.append(dead_letters.requeued_from.queue)
    queues = queue_story(task_id, hints)
    story = TaskStory(task_id, now, backend, dead_letters, snapshot, queues)
    return replace(story, summary=_summary(story))


# --- ids by prefix ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskMatch:
    task_id: str
    name: str
    # Where the id was seen: "dead letter" or "worker snapshot".
    source: str
    seen_at: datetime | None


def task_matches(prefix: str, limit: int = MATCHES_SHOWN) -> list[TaskMatch]:
    """Task ids that start with ``prefix`` (``clean_task_id(prefix=True)``), in the dead
    letters (their own ids, on the task id's index) and the workers' snapshot."""
    found: dict[str, TaskMatch] = {}
    rows = (
        DeadLetter.objects.filter(Q(task_id__startswith=prefix))
        .order_by("-id")
        .values_list("task_id", "task_name", "failed_at")[: limit * 2]
    )
    for task_id, name, failed_at in rows:
        # SQLite's LIKE ignores case: keep what really starts with the prefix.
        if task_id.startswith(prefix) and task_id not in found and linkable(task_id):
            found[task_id] = TaskMatch(task_id, name, "dead letter", failed_at)
    for worker in _snapshot_rows():
        for kind in KINDS:
            for task in getattr(worker, kind) or []:
                seen = task.get("id") if isinstance(task, dict) else None
                if isinstance(seen, str) and seen.startswith(prefix) and linkable(seen):
                    name = str(task.get("name") or "")
                    match = TaskMatch(seen, name, "worker snapshot", worker.last_seen_at)
                    found.setdefault(seen, match)
    return list(found.values())[:limit]


def lookup_url(task_id: str) -> str:
    return reverse("task_lookup", args=[task_id])
