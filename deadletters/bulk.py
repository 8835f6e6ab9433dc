"""Bulk requeue and discard: asked for in a request, carried out by the monitor.

The set is fixed at the click: the ticked ids, or the filter as the operator
saw it, bounded by the newest id then, and always only rows open at the time.
The runner walks it in id order, a chunk at a time, and keeps its place
(``cursor``) in the database, so a monitor that dies resumes where it was.

Requeue of a chunk: claim the open rows (state, new task ids,
``requeue_pending``) and commit; publish; then confirm the published rows and
move the cursor in one more commit. A monitor killed between the two commits
leaves rows claimed but unconfirmed: they may or may not have reached the
broker, so they are counted as ``unconfirmed`` and never published again.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from django.db import transaction
from django.db.models import Max, QuerySet
from django.http import QueryDict
from django.utils import timezone

from dashboard import audit
from dashboard.celery import BrokerUnavailable, publish_task
from deadletters.aggregates import count_handled
from deadletters.filters import DeadLetterFilter
from deadletters.models import BulkAction, DeadLetter
from deadletters.services import requeue_message

logger = logging.getLogger("deadletters.bulk")

CHUNK = 500
# Hand the scheduler back after this long, so other jobs and a stop get their turn.
SLICE_SECONDS = 5.0

_ROW_FIELDS = (
    "id", "state", "signature", "task_name", "queue", "task_id", "args", "kwargs", "headers",
    "exchange", "routing_key", "priority", "root_id", "requeued_at", "discarded_at",
    "bulk_action_id", "lossy", "quarantine_reason",
)  # fmt: skip


def matching(filter_query: str) -> QuerySet[DeadLetter]:
    """The rows a stored filter matches, ignoring its state: only open rows are acted on."""
    params = QueryDict(filter_query, mutable=True)
    params.pop("state", None)
    return DeadLetterFilter(params, queryset=DeadLetter.objects.all()).qs


def target_rows(action: BulkAction) -> QuerySet[DeadLetter]:
    if action.selected_ids is not None:
        rows = DeadLetter.objects.filter(pk__in=action.selected_ids)
    else:
        rows = matching(action.filter_query)
    return rows.filter(pk__lte=action.max_id).order_by("pk")


def open_count(rows: QuerySet[DeadLetter]) -> int:
    return rows.filter(state=DeadLetter.State.OPEN).count()


def create(
    *,
    user: Any,
    action: str,
    reason: str,
    filter_query: str = "",
    selected_ids: list[int] | None = None,
) -> BulkAction:
    """Record what the operator asked for; the monitor carries it out."""
    max_id = DeadLetter.objects.aggregate(top=Max("pk"))["top"] or 0
    bulk = BulkAction(
        action=action,
        created_by=user if user.is_authenticated else None,
        reason=reason,
        filter_query="" if selected_ids is not None else filter_query,
        filter_description="" if selected_ids is not None else describe(filter_query),
        selected_ids=selected_ids,
        max_id=max_id,
        total=0,
    )
    bulk.total = open_count(target_rows(bulk))
    with transaction.atomic():
        bulk.save()
        audit.record(
            user=user,
            action=f"bulk_{action}",
            target_type="deadletter",
            target_ids=selected_ids or [],
            target_filter=bulk.filter_query,
            count=bulk.total,
            reason=reason,
            details={"bulk_action": bulk.pk, "filter": bulk.filter_description},
        )
    return bulk


def describe(filter_query: str) -> str:
    """The filter in words, as the progress page and the audit show it."""
    params = QueryDict(filter_query)
    labels = {
        "task": "task", "queue": "queue", "exception": "exception", "signature": "group",
        "worker": "worker", "range": "failed in the last", "since": "failed since",
        "until": "failed before", "q": "search",
    }  # fmt: skip
    parts = [f"{label} {params[name]!r}" for name, label in labels.items() if params.get(name)]
    return ", ".join(parts) or "all dead letters"


# --- the runner (in the monitor) ------------------------------------------------------


def run_pending() -> None:
    """The monitor's job: work on the oldest unfinished bulk action for a while."""
    action = (
        BulkAction.objects.filter(state__in=[BulkAction.State.PENDING, BulkAction.State.RUNNING])
        .order_by("id")
        .first()
    )
    if action is not None:
        run(action, seconds=SLICE_SECONDS)


def run(action: BulkAction, *, seconds: float | None = None) -> BulkAction:
    """Carry ``action`` on for up to ``seconds`` (or to its end); returns it refreshed."""
    deadline = None if seconds is None else time.monotonic() + seconds
    if action.state == BulkAction.State.PENDING:
        BulkAction.objects.filter(pk=action.pk).update(
            state=BulkAction.State.RUNNING, started_at=timezone.now()
        )
    else:
        _settle_unconfirmed(action)
    action.refresh_from_db()
    while action.state == BulkAction.State.RUNNING:
        if deadline is not None and time.monotonic() > deadline:
            break
        _chunk(action)
        action.refresh_from_db()
    return action


def _settle_unconfirmed(action: BulkAction) -> None:
    """After a crash: rows claimed by this action but never confirmed."""
    with transaction.atomic():
        rows = list(
            DeadLetter.objects.select_for_update()
            .filter(bulk_action=action, requeue_pending=True)
            .only("id", "signature", "task_name", "queue")
        )
        if not rows:
            return
        DeadLetter.objects.filter(pk__in=[r.pk for r in rows]).update(requeue_pending=False)
        count_handled(rows, action="requeue")
        BulkAction.objects.filter(pk=action.pk).update(
            unconfirmed=action.unconfirmed + len(rows),
            cursor=max(action.cursor, max(r.pk for r in rows)),
        )
        logger.warning(
            "bulk action %s: %d rows were claimed but not confirmed before a crash; "
            "they are not published again",
            action.pk,
            len(rows),
        )


def _chunk(action: BulkAction) -> None:
    rows = list(target_rows(action).filter(pk__gt=action.cursor).values(*_ROW_FIELDS)[:CHUNK])
    if not rows:
        _finish(action)
        return
    # Rows this action already handled (before a crash) were counted then.
    others = [r for r in rows if r["bulk_action_id"] != action.pk]
    handled_after_click = [
        r for r in others
        if r["state"] != DeadLetter.State.OPEN
        and (r["requeued_at"] or r["discarded_at"] or action.created_at) >= action.created_at
    ]  # fmt: skip
    candidates = [r["id"] for r in others if r["state"] == DeadLetter.State.OPEN]
    last_id = rows[-1]["id"]
    if action.action == BulkAction.Action.DISCARD:
        _discard(action, candidates, skipped=len(handled_after_click), last_id=last_id)
    else:
        _requeue(action, rows, candidates, skipped=len(handled_after_click), last_id=last_id)


def _discard(action: BulkAction, ids: list[int], *, skipped: int, last_id: int) -> None:
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
        BulkAction.objects.filter(pk=action.pk).update(
            cursor=last_id,
            done=action.done + len(rows),
            skipped=action.skipped + skipped + (len(ids) - len(rows)),
        )


def _requeue(
    action: BulkAction, rows: list[dict[str, Any]], ids: list[int], *, skipped: int, last_id: int
) -> None:
    by_id = {r["id"]: r for r in rows}
    now = timezone.now()
    # 1. Claim: from here the rows are ours; nobody else can requeue them.
    with transaction.atomic():
        claimed = list(
            DeadLetter.objects.select_for_update()
            .filter(pk__in=ids, state=DeadLetter.State.OPEN)
            .only("id", "lossy", "quarantine_reason", "task_name")
        )
        unrequeueable = [d.pk for d in claimed if d.requeue_blocker]
        claimed = [d for d in claimed if not d.requeue_blocker]
        for dead_letter in claimed:
            dead_letter.state = DeadLetter.State.REQUEUED
            dead_letter.requeue_task_id = str(uuid.uuid4())
            dead_letter.requeued_at = now
            dead_letter.requeued_by_id = action.created_by_id
            dead_letter.bulk_action_id = action.pk
            dead_letter.requeue_pending = True
        DeadLetter.objects.bulk_update(
            claimed,
            ["state", "requeue_task_id", "requeued_at", "requeued_by", "bulk_action",
             "requeue_pending"],
        )  # fmt: skip
        skipped += len(ids) - len(claimed) - len(unrequeueable)
    # 2. Publish, outside any transaction: the claim is already visible to all.
    published: list[DeadLetter] = []
    error = ""
    for dead_letter in claimed:
        row = DeadLetter(**{k: v for k, v in by_id[dead_letter.pk].items()
                            if k not in ("bulk_action_id",)})  # fmt: skip
        try:
            publish_task(**requeue_message(row, dead_letter.requeue_task_id))
        except BrokerUnavailable as exc:
            error = str(exc)
            break
        published.append(row)
    unpublished = [d.pk for d in claimed[len(published) :]]
    # 3. Confirm what the broker took, give back what it did not.
    with transaction.atomic():
        DeadLetter.objects.filter(pk__in=[d.pk for d in published]).update(requeue_pending=False)
        if unpublished:
            DeadLetter.objects.filter(pk__in=unpublished).update(
                state=DeadLetter.State.OPEN,
                requeue_task_id="",
                requeued_at=None,
                requeued_by=None,
                bulk_action=None,
                requeue_pending=False,
            )
        count_handled(published, action="requeue")
        changes: dict[str, Any] = {
            "done": action.done + len(published),
            "skipped": action.skipped + skipped,
            "failed": action.failed + len(unrequeueable),
            "cursor": last_id,
        }
        if error:
            # The broker is away: stop here rather than fail every message in turn.
            # What is left stays open, and the same filter can be run again.
            remaining = open_count(target_rows(action).filter(pk__gt=action.cursor))
            changes.update(failed=changes["failed"] + remaining, last_error=error)
        BulkAction.objects.filter(pk=action.pk).update(**changes)
    if error:
        action.refresh_from_db()
        _finish(action, state=BulkAction.State.FAILED)


def _finish(action: BulkAction, state: str = BulkAction.State.DONE) -> None:
    with transaction.atomic():
        updated = BulkAction.objects.filter(pk=action.pk, state=BulkAction.State.RUNNING).update(
            state=state, finished_at=timezone.now()
        )
        if not updated:
            return
        action.refresh_from_db()
        audit.record(
            user=action.created_by,
            action=f"bulk_{action.action}_finished",
            target_type="deadletter",
            target_filter=action.filter_query,
            count=action.done,
            reason=action.reason,
            details={
                "bulk_action": action.pk,
                "done": action.done,
                "skipped": action.skipped,
                "failed": action.failed,
                "unconfirmed": action.unconfirmed,
                "error": action.last_error,
            },
        )
