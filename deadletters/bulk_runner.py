"""Carrying out bulk requeue and discard, in the monitor (``deadletters.bulk``
records what the operator asked for).

The runner walks it in id order, a chunk at a time, and keeps its place
(``cursor``) in the database, so a monitor that dies resumes where it was.

Requeue of a chunk, in two commits around the publish. The first claims the
open rows with one statement (state, new task ids, the action), counts the
rest of the chunk and moves the cursor past it. The messages go out
pipelined, from a thread of their own, while the next chunk is read and
claimed. The second commit confirms what the broker took, gives back (open)
what it was never handed, and hands the next chunk over. The action names
the chunks in between: ``pending_ids`` (handed to the broker, or about to
be) and ``claimed_ids`` (claimed while another chunk was being published).
A monitor killed in between leaves them there: the pending rows may or may
not have reached the broker, so the next run counts them as ``unconfirmed``
and never publishes them again; the claimed ones never left, and it
publishes them first. The messages of a pipeline that the broker dropped
before it answered are unconfirmed too.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from dashboard import audit
from dashboard.broker.publish import Published, publish_tasks
from deadletters.aggregates import count_handled
from deadletters.bulk import InvalidFilter, group_detail, open_count, target_rows
from deadletters.models import ACTIVE, BulkAction, DeadLetter
from deadletters.selectors import requeue_outcomes
from deadletters.services import requeue_message

logger = logging.getLogger("deadletters.bulk")

# Hand the scheduler back after this long, so other jobs and a stop get their turn.
SLICE_SECONDS = 5.0

# What a chunk reads of each row: enough to sort it and to build its message.
# Reading any other field of these rows would cost a query per row.
_ROW_FIELDS = (
    "id", "state", "signature", "task_name", "queue", "task_id", "args", "kwargs", "headers",
    "exchange", "routing_key", "priority", "root_id", "requeued_at", "discarded_at",
    "bulk_action", "lossy", "quarantine_reason",
)  # fmt: skip


def run_pending() -> None:
    """The monitor's job: work on the oldest unfinished bulk action for a while."""
    action = BulkAction.objects.filter(state__in=ACTIVE).order_by("id").first()
    if action is None:
        return
    try:
        run(action, seconds=SLICE_SECONDS)
    except InvalidFilter as exc:
        # Refused at the click; one stored some other way must not hold up the
        # actions queued behind it.
        BulkAction.objects.filter(pk=action.pk).update(last_error=f"invalid filter: {exc}")
        _running(action).update(state=BulkAction.State.FAILED, finished_at=timezone.now())
        BulkAction.objects.filter(pk=action.pk, state__in=ACTIVE).update(
            state=BulkAction.State.FAILED, finished_at=timezone.now()
        )


def run(action: BulkAction, *, seconds: float | None = None) -> BulkAction:
    """Carry ``action`` on for up to ``seconds`` (or to its end); returns it refreshed."""
    deadline = None if seconds is None else time.monotonic() + seconds
    if action.state == BulkAction.State.PENDING:
        first = BulkAction.State.CANARY if _needs_canary(action) else BulkAction.State.RUNNING
        if BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.PENDING).update(
            state=first, started_at=timezone.now()
        ):
            logger.info("%s: started, %d open rows", _label(action), action.total)
    else:
        _settle_unconfirmed(action)
    action.refresh_from_db()
    if action.state == BulkAction.State.CANARY:
        _canary(action)
        action.refresh_from_db()
    if action.state == BulkAction.State.RUNNING:
        if action.action == BulkAction.Action.REQUEUE:
            _requeue(action, deadline)
        else:
            _discard(action, deadline)
    action.refresh_from_db()
    return action


def _label(action: BulkAction) -> str:
    """The action in a log line: what it does to which rows, its group named by
    task and exception (as stored at the click: no query)."""
    return f"bulk action {action.pk} ({action.get_action_display().lower()} of {action.scope})"


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _settle_unconfirmed(action: BulkAction) -> None:
    """After a crash: the rows this action handed to the broker but never confirmed."""
    with transaction.atomic():
        pending = BulkAction.objects.select_for_update().get(pk=action.pk).pending_ids or []
        fields = ("id", "signature", "task_name", "queue")
        if not pending:
            return
        rows = list(
            DeadLetter.objects.filter(
                pk__in=pending, bulk_action=action, state=DeadLetter.State.REQUEUED
            ).only(*fields)
        )
        count_handled(rows, action="requeue")
        BulkAction.objects.filter(pk=action.pk).update(
            unconfirmed=F("unconfirmed") + len(rows), pending_ids=None
        )
    logger.warning(
        "%s: %d rows were claimed but not confirmed before a crash; they are not published again",
        _label(action),
        len(rows),
    )


@dataclass
class _Chunk:
    """The next ``DEADLETTERS_BULK_CHUNK`` rows of the set after the cursor, sorted."""

    open: list[DeadLetter]
    # Not open, and handled by someone else after the click.
    skipped: int
    last_id: int


def _chunk_size(action: BulkAction) -> int:
    """A second's worth of messages at the operator's rate, at the most a chunk."""
    if action.rate:
        return max(1, min(settings.DEADLETTERS_BULK_CHUNK, int(action.rate)))
    return settings.DEADLETTERS_BULK_CHUNK


def _next_chunk(action: BulkAction) -> _Chunk | None:
    """The rows after the cursor, or None at the end of the set."""
    size = _chunk_size(action)
    if action.selected_ids is not None:
        # The chunk's own ids only: the whole list in every chunk's query cost
        # more than the chunk's work (10,000 ids: a second a chunk, docs/benchmarks.md).
        ids = sorted(i for i in action.selected_ids if action.cursor < i <= action.max_id)
        chosen = DeadLetter.objects.filter(pk__in=ids[:size]).order_by("pk")
    else:
        chosen = target_rows(action).filter(pk__gt=action.cursor)
    rows = list(chosen.only(*_ROW_FIELDS)[:size])
    if not rows:
        return None
    # Rows this action already handled (before a crash) were counted then.
    others = [r for r in rows if r.bulk_action_id != action.pk]
    skipped = sum(
        1 for r in others
        if not r.is_open
        and (r.requeued_at or r.discarded_at or action.created_at) >= action.created_at
    )  # fmt: skip
    return _Chunk([r for r in others if r.is_open], skipped, rows[-1].pk)


def _discard(action: BulkAction, deadline: float | None) -> None:
    while not _past(deadline):
        chunk = _next_chunk(action)
        if chunk is None:
            _finish(action)
            return
        ids = [r.pk for r in chunk.open]
        with transaction.atomic():
            rows = list(
                DeadLetter.objects.select_for_update()
                .filter(pk__in=ids, state=DeadLetter.State.OPEN)
                .only("id", "signature", "task_name", "queue")
            )
            DeadLetter.objects.filter(pk__in=[r.pk for r in rows]).update(
                state=DeadLetter.State.DISCARDED,
                discarded_at=timezone.now(),
                discarded_by_id=action.created_by_id,
                bulk_action=action,
            )
            count_handled(rows, action="discard")
            if not _running(action).update(
                cursor=chunk.last_id,
                done=F("done") + len(rows),
                skipped=F("skipped") + chunk.skipped + (len(ids) - len(rows)),
            ):
                transaction.set_rollback(True)
                return
        action.cursor = chunk.last_id


def _running(action: BulkAction) -> QuerySet[BulkAction]:
    """The action while it runs: paused, cancelled (or failed by a superuser in the
    admin), it stops at the next chunk."""
    return BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.RUNNING)


# --- the canary ---------------------------------------------------------------------------
#
# A large requeue first requeues a few rows spread across its set, and waits
# for what becomes of them (the hook reports each outcome; a failure again is a
# new dead letter linked back). If one fails again with the same signature,
# the fix did not work: the action stops, and the rest stay open, untouched.


def _needs_canary(action: BulkAction) -> bool:
    return (
        action.action == BulkAction.Action.REQUEUE
        and not action.skip_canary
        and action.total > settings.DEADLETTERS_CANARY_ABOVE
    )


def _canary(action: BulkAction) -> None:
    if action.canary_ids is None:
        _publish_canary(action)
        action.refresh_from_db()
        if action.state != BulkAction.State.CANARY:
            return
    ids = action.canary_ids or []
    repeats = DeadLetter.objects.filter(
        requeued_from_id__in=ids, signature=F("requeued_from__signature")
    )
    repeated = repeats.values("requeued_from_id").distinct().count()
    if repeated:
        _conclude(
            action,
            BulkAction.State.STOPPED,
            f"Stopped by the canary: {repeated} of {len(ids)} failed again with the same "
            "error. The other rows were not touched and are still open.",
        )
        return
    settled = (
        DeadLetter.objects.filter(pk__in=ids)
        .filter(Q(requeue_outcome="succeeded") | Q(requeued_as__isnull=False))
        .distinct()
        .count()
    )
    if settled >= len(ids):
        succeeded = DeadLetter.objects.filter(pk__in=ids, requeue_outcome="succeeded").count()
        _conclude(
            action,
            BulkAction.State.RUNNING,
            f"The canary passed: {succeeded} of {len(ids)} succeeded"
            + (f", {len(ids) - succeeded} failed with another error" if settled > succeeded else "")
            + "; the rest followed.",
        )
        return
    started = action.canary_started_at or timezone.now()
    if (timezone.now() - started).total_seconds() > settings.DEADLETTERS_CANARY_TIMEOUT:
        _conclude(
            action,
            BulkAction.State.STOPPED,
            f"The canary did not finish: {settled} of {len(ids)} outcomes known after "
            f"{settings.DEADLETTERS_CANARY_TIMEOUT} s. The other rows are still open.",
        )


def _spread(action: BulkAction) -> list[DeadLetter]:
    """Up to DEADLETTERS_CANARY_SIZE requeueable open rows, spread across the set."""
    rows = (
        target_rows(action)
        .filter(state=DeadLetter.State.OPEN, lossy=False, quarantine_reason="")
        .exclude(task_name="")
    )
    count = rows.count()
    size = min(settings.DEADLETTERS_CANARY_SIZE, count)
    if not size:
        return []
    positions = sorted({round(i * (count - 1) / max(size - 1, 1)) for i in range(size)})
    ids = [rows.values_list("pk", flat=True)[position] for position in positions]
    return list(DeadLetter.objects.filter(pk__in=ids).order_by("pk").only(*_ROW_FIELDS))


def _publish_canary(action: BulkAction) -> None:
    letters = {d.pk: d for d in _spread(action)}
    new_ids = dict(zip(letters, _task_ids(len(letters)), strict=True))
    with transaction.atomic():
        claimed = _claim(action, new_ids)
        # Named on the action in the claim's commit: a crash after it never
        # publishes them again (pending), and their verdict is read from the rows.
        if not BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.CANARY).update(
            canary_ids=claimed, pending_ids=claimed or None, canary_started_at=timezone.now()
        ):
            transaction.set_rollback(True)
            return
    if not claimed:
        _conclude(action, BulkAction.State.RUNNING, "No row could be requeued first as a canary.")
        return
    for pk in claimed:
        letters[pk].requeue_task_id = new_ids[pk]
    canary = _Claim([letters[pk] for pk in claimed])
    messages = [requeue_message(d, d.requeue_task_id) for d in canary.letters]
    _confirm(action, canary, publish_tasks(messages), None)


def _conclude(action: BulkAction, state: str, verdict: str) -> None:
    """The canary's verdict: go on (running) or stop (with the rest still open)."""
    if state == BulkAction.State.RUNNING:
        BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.CANARY).update(
            state=state, verdict=verdict
        )
        return
    BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.CANARY).update(verdict=verdict)
    action.refresh_from_db()
    _finish(action, state=state)


# --- requeue ------------------------------------------------------------------------------
#
# A chunk's messages go out in a thread of their own while the main thread
# reads and claims the next chunk: the database and the broker work at the
# same time. Only the main thread touches the database.


@dataclass
class _Claim:
    """Rows claimed for requeue (requeued by the action, new task ids), in id order."""

    letters: list[DeadLetter] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [d.pk for d in self.letters]


def _requeue(action: BulkAction, deadline: float | None) -> None:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulk-publish") as publisher:
        current = _claimed_before(action) or _claim_next(action, deadline, handing=True)
        while current is not None:
            if not current.letters:
                _finish(action)  # the end of the set
                return
            sent_at = time.monotonic()
            messages = [requeue_message(d, d.requeue_task_id) for d in current.letters]
            publishing = publisher.submit(publish_tasks, messages)
            following = _claim_next(action, deadline, handing=False)
            if not _confirm(action, current, publishing.result(), following):
                return
            if action.rate:
                # Not faster than the operator asked: a recovering dependency
                # gets the messages spread out.
                pause = sent_at + len(current.letters) / action.rate - time.monotonic()
                if deadline is not None:
                    pause = min(pause, deadline - time.monotonic())
                if pause > 0:
                    time.sleep(pause)
            current = following


def _claimed_before(action: BulkAction) -> _Claim | None:
    """Rows claimed by a run that stopped before it handed them to the broker."""
    if not action.claimed_ids:
        return None
    letters = list(
        DeadLetter.objects.filter(
            pk__in=action.claimed_ids, bulk_action=action, state=DeadLetter.State.REQUEUED
        )
        .order_by("pk")
        .only(*_ROW_FIELDS, "requeue_task_id")
    )
    BulkAction.objects.filter(pk=action.pk).update(
        pending_ids=[d.pk for d in letters] or None, claimed_ids=None
    )
    return _Claim(letters) if letters else None


def _claim_next(action: BulkAction, deadline: float | None, *, handing: bool) -> _Claim | None:
    """Claim the open rows of the next chunks, up to the first that has any.

    An empty claim at the end of the set; None when the deadline came first.
    ``handing``: the claim goes to the broker at once (``pending_ids``), else
    after the chunk in flight (``claimed_ids``).
    """
    while not _past(deadline):
        chunk = _next_chunk(action)
        if chunk is None:
            return _Claim()
        blocked = [r.pk for r in chunk.open if r.requeue_blocker]
        letters = {r.pk: r for r in chunk.open if not r.requeue_blocker}
        new_ids = dict(zip(letters, _task_ids(len(letters)), strict=True))
        # From its commit the rows are ours: nobody else can requeue them. The
        # rest of the chunk is counted now, and the cursor moves past it.
        with transaction.atomic():
            claimed = _claim(action, new_ids)
            failed = (
                DeadLetter.objects.filter(pk__in=blocked, state=DeadLetter.State.OPEN).count()
                if blocked
                else 0
            )
            # Open when read, but a single requeue or discard got there first.
            skipped = chunk.skipped + len(chunk.open) - len(claimed) - failed
            if not _running(action).update(
                cursor=chunk.last_id,
                skipped=F("skipped") + skipped,
                failed=F("failed") + failed,
                **{"pending_ids" if handing else "claimed_ids": claimed or None},
            ):
                transaction.set_rollback(True)
                return None
        action.cursor = chunk.last_id
        if claimed:
            for pk in claimed:
                letters[pk].requeue_task_id = new_ids[pk]
            return _Claim([letters[pk] for pk in claimed])
    return None


def _confirm(
    action: BulkAction, current: _Claim, outcome: Published, following: _Claim | None
) -> bool:
    """Confirm what the broker took of ``current``, give back what it was never
    handed, and hand ``following`` over; False when the broker failed."""
    accepted, uncertain = outcome.accepted, outcome.accepted + outcome.uncertain
    published, unknown = current.letters[:accepted], current.letters[accepted:uncertain]
    given_back = [d.pk for d in current.letters[uncertain:]]
    if outcome.error and following is not None:
        given_back += following.ids
    with transaction.atomic():
        if given_back:
            DeadLetter.objects.filter(pk__in=given_back).update(
                state=DeadLetter.State.OPEN,
                requeue_task_id="",
                requeued_at=None,
                requeued_by=None,
                bulk_action=None,
            )
        count_handled(published + unknown, action="requeue")
        failed = len(given_back)
        changes: dict[str, Any] = {"pending_ids": None, "claimed_ids": None}
        if outcome.error:
            # The broker is away: stop here rather than fail every message in turn.
            # What is left stays open, and the same filter can be run again.
            failed += open_count(target_rows(action).filter(pk__gt=action.cursor))
            changes["last_error"] = outcome.error
        elif following is not None and following.letters:
            changes["pending_ids"] = following.ids
        BulkAction.objects.filter(pk=action.pk).update(
            done=F("done") + len(published),
            unconfirmed=F("unconfirmed") + len(unknown),
            failed=F("failed") + failed,
            **changes,
        )
    if unknown:
        logger.warning(
            "%s: the broker went away before it confirmed %d messages; "
            "they may or may not be queued, and are not published again",
            _label(action),
            len(unknown),
        )
    if outcome.error:
        action.refresh_from_db()
        _finish(action, state=BulkAction.State.FAILED)
        return False
    return True


def _task_ids(count: int) -> list[str]:
    """``count`` new task ids, as ``uuid.uuid4()`` makes them, from one read of the
    system's randomness: a read each took 30 µs here, a sixth of a requeue's CPU."""
    random = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=random[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]


def _claim(action: BulkAction, new_ids: dict[int, str]) -> list[int]:
    """Set the rows of ``new_ids`` that are still open requeued by ``action``, in one
    statement; returns the ids it claimed, in order.

    The ``state = 'open'`` condition is the claim: a row that a single requeue
    holds is waited for, then not matched, so nothing is published twice.
    """
    if not new_ids:
        return []
    fixed = [
        DeadLetter.State.REQUEUED,
        connection.ops.adapt_datetimefield_value(timezone.now()),
        action.created_by_id,
        action.pk,
    ]
    if connection.vendor == "postgresql":
        sql = _CLAIM_POSTGRESQL
        params = [*fixed, list(new_ids), list(new_ids.values()), DeadLetter.State.OPEN]
    else:
        # SQLite has no unnest: the pairs travel as a VALUES list (columns column1, column2).
        sql = _CLAIM_SQLITE.replace("%(values)s", ", ".join(["(%s, %s)"] * len(new_ids)))
        params = [*fixed, *(v for pair in new_ids.items() for v in pair), DeadLetter.State.OPEN]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(row[0] for row in cursor.fetchall())


_CLAIM_POSTGRESQL = """
UPDATE deadletters_deadletter AS d
SET state = %s, requeue_task_id = v.new_id, requeued_at = %s, requeued_by_id = %s,
    bulk_action_id = %s
FROM unnest(%s::bigint[], %s::text[]) AS v(id, new_id)
WHERE d.id = v.id AND d.state = %s
RETURNING d.id
"""

_CLAIM_SQLITE = """
UPDATE deadletters_deadletter
SET state = %s, requeue_task_id = v.column2, requeued_at = %s, requeued_by_id = %s,
    bulk_action_id = %s
FROM (VALUES %(values)s) AS v
WHERE deadletters_deadletter.id = v.column1 AND deadletters_deadletter.state = %s
RETURNING id
"""


def _finish(action: BulkAction, state: str = BulkAction.State.DONE) -> None:
    with transaction.atomic():
        updated = BulkAction.objects.filter(
            pk=action.pk, state__in=[BulkAction.State.RUNNING, BulkAction.State.CANARY]
        ).update(state=state, finished_at=timezone.now())
        if not updated:
            return
        action.refresh_from_db()
        logger.info(
            "%s: %s, %d done, %d skipped, %d failed, %d unconfirmed",
            _label(action),
            action.get_state_display().lower(),
            action.done,
            action.skipped,
            action.failed,
            action.unconfirmed,
        )
        audit.record(
            user=action.created_by,
            action=f"bulk_{action.action}_finished",
            target_type="deadletter",
            target_filter=action.filter_query,
            count=action.done,
            reason=action.reason,
            details={
                "bulk_action": action.pk,
                "filter": action.filter_description,
                **group_detail(action.filter_query),
                "done": action.done,
                "skipped": action.skipped,
                "failed": action.failed,
                "unconfirmed": action.unconfirmed,
                "error": action.last_error,
                "verdict": action.verdict,
                # What the requeued tasks did, as reported by the time it finished
                # (reports arrive apart): apart from the action's own counts, whose
                # "failed" (not published) this overwrote.
                "requeue_outcomes": dataclasses.asdict(requeue_outcomes(action)),
            },
        )
