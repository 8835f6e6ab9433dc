"""Bulk requeue and discard, as the operator asks for them in a request.

The set is fixed at the click: the ticked ids, or the filter as the operator
saw it, bounded by the newest id then (for a batch whose size they must type,
the first click: the number they type is the number acted on), and always
only rows open at the time. A filter the list would refuse is refused here too.
The monitor carries the action out (``deadletters.bulk_runner``).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, QuerySet
from django.http import QueryDict
from django.utils import timezone

from dashboard import audit
from deadletters import selectors
from deadletters.filters import DeadLetterFilter
from deadletters.models import ACTIVE, BulkAction, DeadLetter


class InvalidFilter(ValueError):
    """A filter the list would refuse. Ignoring the part it cannot read would
    act on more rows than the operator saw, so the action is refused instead."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{name}: {' '.join(e)}" for name, e in errors.items()))
        self.errors = errors


def matching(filter_query: str) -> QuerySet[DeadLetter]:
    """The rows a stored filter matches, ignoring its state: only open rows are acted on.

    Raises InvalidFilter where the list would show an error for the filter.
    """
    params = QueryDict(filter_query, mutable=True)
    checked = DeadLetterFilter(params, queryset=DeadLetter.objects.none())
    if not checked.is_valid():
        raise InvalidFilter({name: list(errors) for name, errors in checked.errors.items()})
    params.pop("state", None)
    return DeadLetterFilter(params, queryset=DeadLetter.objects.all()).qs


def newest_id() -> int:
    """The newest dead letter's id: what bounds a set fixed now."""
    return int(DeadLetter.objects.aggregate(top=Max("pk"))["top"] or 0)


def target_rows(action: BulkAction) -> QuerySet[DeadLetter]:
    if action.selected_ids is not None:
        rows = DeadLetter.objects.filter(pk__in=action.selected_ids)
    else:
        rows = matching(action.filter_query)
    return rows.filter(pk__lte=action.max_id).order_by("pk")


def open_count(rows: QuerySet[DeadLetter]) -> int:
    return rows.filter(state=DeadLetter.State.OPEN).count()


class NeedsConfirmation(Exception):
    """A big batch: the operator must type how many rows it touches.

    ``max_id`` is the newest id when they were asked: the confirmation carries
    it back, so the number typed is the number acted on, whatever arrives meanwhile.
    """

    def __init__(self, total: int, max_id: int) -> None:
        super().__init__(
            f"This acts on the {total} dead letters that match now; later failures are not"
            f" included. Type {total} to confirm."
        )
        self.total = total
        self.max_id = max_id


def confirm_size(
    *,
    filter_query: str = "",
    selected_ids: list[int] | None = None,
    confirmation: str = "",
    max_id: int | None = None,
) -> int:
    """How many open rows the action would touch: those up to ``max_id`` (by
    default the newest id now).

    Raises NeedsConfirmation when that is above DEADLETTERS_CONFIRM_ABOVE and
    ``confirmation`` is not that number; InvalidFilter for a filter the list
    would refuse.
    """
    bound = newest_id() if max_id is None else max_id
    preview = BulkAction(filter_query=filter_query, selected_ids=selected_ids, max_id=bound)
    total = open_count(target_rows(preview))
    if total > settings.DEADLETTERS_CONFIRM_ABOVE and confirmation.strip() != str(total):
        raise NeedsConfirmation(total, bound)
    return total


def create(
    *,
    user: Any,
    action: str,
    reason: str,
    filter_query: str = "",
    selected_ids: list[int] | None = None,
    max_id: int | None = None,
    skip_canary: bool = False,
    rate: float | None = None,
) -> BulkAction:
    """Record what the operator asked for; the monitor carries it out.

    ``max_id`` bounds the set: the newest id when the operator confirmed its
    size (``NeedsConfirmation.max_id``), by default the newest now. Raises
    InvalidFilter for a filter the list would refuse.
    """
    if max_id is None:
        max_id = newest_id()
    bulk = BulkAction(
        action=action,
        created_by_id=audit.user_id(user),
        reason=reason,
        filter_query="" if selected_ids is not None else filter_query,
        filter_description="" if selected_ids is not None else describe(filter_query),
        selected_ids=selected_ids,
        max_id=max_id,
        total=0,
        skip_canary=skip_canary,
        rate=rate,
    )
    bulk.total = open_count(target_rows(bulk))
    if settings.DEADLETTERS_APPROVAL_ABOVE and bulk.total > settings.DEADLETTERS_APPROVAL_ABOVE:
        bulk.state = BulkAction.State.APPROVAL
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
            details={
                "bulk_action": bulk.pk,
                "filter": bulk.filter_description,
                **group_detail(bulk.filter_query),
                "skip_canary": skip_canary,
                "rate": rate,
                "needs_approval": bulk.state == BulkAction.State.APPROVAL,
            },
        )
    return bulk


# --- while it runs: pause, resume, cancel, approve ----------------------------------------


class NotAllowedNow(Exception):
    """The action is not in a state that allows this (said in words)."""


def _change(
    action: BulkAction, user: Any, verb: str, states: tuple[str, ...], **changes: Any
) -> BulkAction:
    with transaction.atomic():
        if not BulkAction.objects.filter(pk=action.pk, state__in=states).update(**changes):
            action.refresh_from_db()
            raise NotAllowedNow(f"Not {verb}: the action is {action.get_state_display().lower()}.")
        action.refresh_from_db()
        audit.record(
            user=user,
            action=f"bulk_{verb}",
            target_type="bulk_action",
            target_ids=[action.pk],
            count=action.total,
            reason=action.reason,
            details={"bulk_action": action.pk, "state": action.state},
        )
    return action


def pause(action: BulkAction, *, user: Any) -> BulkAction:
    """Hold a running action at its next chunk; ``resume`` carries it on from there."""
    return _change(
        action, user, "paused", tuple(ACTIVE), state=BulkAction.State.PAUSED, paused_from=F("state")
    )


def resume(action: BulkAction, *, user: Any) -> BulkAction:
    return _change(
        action, user, "resumed", (BulkAction.State.PAUSED,), state=F("paused_from"), paused_from=""
    )


def cancel(action: BulkAction, *, user: Any) -> BulkAction:
    """Stop for good; what was requeued stays requeued, the rest stays open."""
    waiting = (BulkAction.State.APPROVAL, BulkAction.State.PAUSED, *ACTIVE)
    return _change(
        action, user, "cancelled", waiting,
        state=BulkAction.State.CANCELLED, finished_at=timezone.now(),
    )  # fmt: skip


class SamePerson(Exception):
    pass


def approve(action: BulkAction, *, user: Any) -> BulkAction:
    """A second operator lets a very large action run; both names are in the audit."""
    if action.created_by_id is not None and action.created_by_id == audit.user_id(user):
        raise SamePerson("Another operator must approve what you asked for.")
    return _change(
        action, user, "approved", (BulkAction.State.APPROVAL,),
        state=BulkAction.State.PENDING, approved_by_id=audit.user_id(user),
        approved_at=timezone.now(),
    )  # fmt: skip


def describe(filter_query: str) -> str:
    """The filter in words, as the progress page and the audit show it: its group
    named by task and exception, looked up now (one query when it names one)."""
    names = selectors.group_names([selectors.filter_group(filter_query)])
    return selectors.describe_filter(filter_query, names)


def group_detail(filter_query: str) -> dict[str, str]:
    """``{"group": its name}`` for an audit event's details when the filter names
    a group: kept there, the name outlives the group's row, which retention prunes."""
    signature = selectors.filter_group(filter_query)
    name = selectors.group_names([signature]).get(signature)
    return {"group": name} if name else {}


def named_scope(action: BulkAction) -> str:
    """What ``action`` acts on, in words. An action stored before groups had
    names carries its group's hash: named now, while the group's row is there."""
    signature = selectors.filter_group(action.filter_query)
    if action.selected_ids is None and signature and signature in action.filter_description:
        return describe(action.filter_query)
    return action.scope
