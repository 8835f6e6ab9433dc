"""Dead letters, their groups and bulk actions: the console's reads and actions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from django.db.models import QuerySet
from django.http import HttpRequest, QueryDict
from django.shortcuts import get_object_or_404
from ninja import Path, Query, Router, Status
from ninja.errors import ValidationError
from pydantic import Field

from dashboard.api import pagination
from dashboard.api.auth import PerToken, acting, require
from dashboard.api.errors import field_errors, responses
from dashboard.api.schemas import (
    ActionIn,
    BulkIn,
    BulkOut,
    Conflict,
    DeadLetterDetail,
    DeadLetterFilters,
    DeadLetterPage,
    Discarded,
    EditRequeueIn,
    GroupPage,
    NameOrEmpty,
    Requeued,
)
from dashboard.broker import BrokerUnavailable
from dashboard.http import MAX_ID
from deadletters import bulk, selectors
from deadletters.filters import DeadLetterFilter
from deadletters.forms import BulkActionForm, EditRequeueForm
from deadletters.models import BulkAction, DeadLetter
from deadletters.redact import restore
from deadletters.services import (
    AlreadyHandled,
    NotRequeueable,
    deadletter_discard,
    deadletter_requeue,
)

router = Router(tags=["dead letters"])

Limit = Annotated[int | None, Field(ge=1, le=pagination.MAX_LIMIT)]
PkPath = Annotated[int, Path(ge=1, le=MAX_ID)]


def filter_params(filters: DeadLetterFilters) -> QueryDict:
    """The filters as the console's query string: what DeadLetterFilter and bulk actions read."""
    params = QueryDict(mutable=True)
    for name, value in filters.model_dump(exclude_none=True).items():
        params[name] = value.isoformat() if isinstance(value, datetime) else str(value)
    return params


def filtered(filters: DeadLetterFilters) -> QuerySet[DeadLetter]:
    checked = DeadLetterFilter(
        filter_params(filters), queryset=DeadLetter.objects.defer(*selectors.BIG_COLUMNS)
    )
    if not checked.is_valid():
        raise field_errors("query", checked.errors)
    return checked.qs


@router.get(
    "/deadletters",
    response=responses(DeadLetterPage, 429),
    throttle=[PerToken("list")],
    summary="List dead letters, newest first, with the console's filters",
)
def list_dead_letters(
    request: HttpRequest,
    filters: Query[DeadLetterFilters],
    cursor: str | None = None,
    limit: Limit = None,
) -> dict[str, Any]:
    require(request, "deadletters.view_deadletter")
    rows, next_cursor = pagination.page(filtered(filters), cursor=cursor, limit=limit)
    return {"items": rows, "next_cursor": next_cursor}


@router.get("/deadletters/{pk}", response=responses(DeadLetterDetail, 404))
def dead_letter(request: HttpRequest, pk: PkPath) -> DeadLetter:
    """One dead letter, redacted exactly as its page shows it."""
    require(request, "deadletters.view_deadletter")
    return get_object_or_404(
        DeadLetter.objects.select_related("requeued_by", "discarded_by"), pk=pk
    )


def _conflict(exc: AlreadyHandled) -> dict[str, Any]:
    row = exc.dead_letter
    return {
        "detail": str(exc),
        "state": row.state,
        "handled_by": row.handled_by,
        "handled_at": row.handled_at,
    }


@router.post("/deadletters/{pk}/requeue", response=responses(Requeued, 404, 409, 503))
def requeue(request: HttpRequest, pk: PkPath, payload: ActionIn | None = None) -> Any:
    """Publish the task again under a new id, to its queue. A row handled already is a 409
    that says by whom and when."""
    require(request, "deadletters.requeue_deadletter")
    row = get_object_or_404(DeadLetter, pk=pk)
    try:
        with acting(request):
            task_id = deadletter_requeue(
                dead_letter=row, user=request.user, reason=payload.reason if payload else ""
            )
    except AlreadyHandled as exc:
        return Status(409, _conflict(exc))
    except NotRequeueable as exc:
        return Status(409, Conflict(detail=str(exc), state=row.state))
    except BrokerUnavailable as exc:
        return Status(
            503, {"detail": f"Not requeued: {exc}. The dead letter is still open; try again."}
        )
    return {"id": row.pk, "state": row.state, "new_task_id": task_id}


@router.post("/deadletters/{pk}/discard", response=responses(Discarded, 404, 409))
def discard(request: HttpRequest, pk: PkPath, payload: ActionIn | None = None) -> Any:
    require(request, "deadletters.discard_deadletter")
    row = get_object_or_404(DeadLetter, pk=pk)
    try:
        with acting(request):
            deadletter_discard(
                dead_letter=row, user=request.user, reason=payload.reason if payload else ""
            )
    except AlreadyHandled as exc:
        return Status(409, _conflict(exc))
    return {"id": row.pk, "state": row.state}


@router.post("/deadletters/{pk}/edit", response=responses(Requeued, 404, 409, 503))
def edit_and_requeue(request: HttpRequest, pk: PkPath, payload: EditRequeueIn) -> Any:
    """Change args, kwargs or the queue, then requeue, validated as the edit page validates.
    Values left as "[redacted]" keep their stored value."""
    require(request, "deadletters.change_deadletter", "deadletters.requeue_deadletter")
    row = get_object_or_404(DeadLetter, pk=pk)
    form = EditRequeueForm(
        {
            "args": json.dumps(payload.args),
            "kwargs": json.dumps(payload.kwargs),
            "queue": payload.queue,
            "reason": payload.reason,
        }
    )
    if not form.is_valid():
        raise field_errors("body", form.errors)
    try:
        with acting(request):
            task_id = deadletter_requeue(
                dead_letter=row,
                user=request.user,
                args=restore(form.cleaned_data["args"], row.args),
                kwargs=restore(form.cleaned_data["kwargs"], row.kwargs),
                queue=form.cleaned_data["queue"],
                reason=form.cleaned_data["reason"],
            )
    except AlreadyHandled as exc:
        return Status(409, _conflict(exc))
    except NotRequeueable as exc:
        return Status(409, Conflict(detail=str(exc), state=row.state))
    except BrokerUnavailable as exc:
        return Status(
            503, {"detail": f"Not requeued: {exc}. The dead letter is still open; try again."}
        )
    return {"id": row.pk, "state": row.state, "new_task_id": task_id}


# --- groups --------------------------------------------------------------------------


@router.get("/groups", response=responses(GroupPage), summary="Failure groups, open ones first")
def groups(
    request: HttpRequest,
    all: bool = False,
    task: NameOrEmpty = "",
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0,
    limit: Limit = None,
) -> dict[str, Any]:
    """Groups with open dead letters first, then by the latest failure; ``all`` adds the
    groups with none open. Paged by offset: there is one row per distinct failure."""
    require(request, "deadletters.view_deadletter")
    size = pagination.page_size(limit)
    rows = list(selectors.failure_groups(show_all=all, task=task)[offset : offset + size + 1])
    return {
        "items": rows[:size],
        "next_offset": offset + size if len(rows) > size else None,
    }


# --- bulk actions ------------------------------------------------------------------------


# The form's names for the API's fields, for the 422s.
BULK_FIELDS = {"filter_query": "filter", "scope": "ids"}


@router.post(
    "/bulk",
    response=responses(BulkOut, 429),
    throttle=[PerToken("bulk")],
    summary="Requeue or discard many dead letters in the background",
)
def bulk_create(request: HttpRequest, payload: BulkIn) -> BulkAction:
    """The set is fixed now: the ``ids``, or the open rows the ``filter`` matches up to the
    newest id. Above DEADLETTERS_CONFIRM_ABOVE rows the answer is a 422 on ``confirm`` that
    says how many; send that number as ``confirm`` and the ``max_id`` it gave back."""
    require(request, f"deadletters.{payload.action}_deadletter")
    if payload.ids is not None and payload.filter is not None:
        raise ValidationError(
            [{"loc": ["body", "ids"], "msg": "Send ids or a filter, not both.", "type": "invalid"}]
        )
    query = filter_params(payload.filter).urlencode() if payload.filter else ""
    data = QueryDict(mutable=True)
    data.update(
        {
            "action": payload.action,
            "scope": "selected" if payload.ids is not None else "filter",
            "filter_query": query,
            "reason": payload.reason,
            "confirm": payload.confirm,
            "skip_canary": "on" if payload.skip_canary else "",
            "rate": "" if payload.rate is None else str(payload.rate),
            "max_id": "" if payload.max_id is None else str(payload.max_id),
        }
    )
    data.setlist("ids", [str(i) for i in payload.ids or []])
    # The page's own form: the same checks, the same messages.
    form = BulkActionForm(data)
    if not form.is_valid():
        raise field_errors("body", form.errors, BULK_FIELDS)
    cleaned = form.cleaned_data
    scope_ids = cleaned["ids"] if cleaned["scope"] == "selected" else None
    max_id = bulk.newest_id() if cleaned["max_id"] is None else cleaned["max_id"]
    try:
        bulk.confirm_size(
            filter_query=query,
            selected_ids=scope_ids,
            confirmation=cleaned["confirm"],
            max_id=max_id,
        )
    except bulk.NeedsConfirmation as exc:
        raise ValidationError(
            [
                {
                    "loc": ["body", "confirm"],
                    "msg": f"{exc} Send confirm={exc.total} and max_id={exc.max_id}.",
                    "type": "confirmation",
                    "ctx": {"total": exc.total, "max_id": exc.max_id},
                }
            ]
        ) from None
    with acting(request):
        action = bulk.create(
            user=request.user,
            action=cleaned["action"],
            reason=cleaned["reason"],
            filter_query=query,
            selected_ids=scope_ids,
            max_id=max_id,
            skip_canary=cleaned["skip_canary"],
            rate=cleaned["rate"],
        )
    return action


@router.get("/bulk/{pk}", response=responses(BulkOut, 404), summary="A bulk action's progress")
def bulk_detail(request: HttpRequest, pk: PkPath) -> BulkAction:
    require(request, "deadletters.view_deadletter")
    return get_object_or_404(BulkAction.objects.select_related("created_by", "approved_by"), pk=pk)


def _control(verb: str) -> None:
    act = {"pause": bulk.pause, "resume": bulk.resume, "cancel": bulk.cancel,
           "approve": bulk.approve}[verb]  # fmt: skip

    def control(request: HttpRequest, pk: PkPath) -> Any:
        action = get_object_or_404(BulkAction, pk=pk)
        require(request, f"deadletters.{action.action}_deadletter")
        try:
            with acting(request):
                action = act(action, user=request.user)
        except (bulk.NotAllowedNow, bulk.SamePerson) as exc:
            return Status(409, Conflict(detail=str(exc), state=action.state))
        return action

    control.__name__ = f"bulk_{verb}"
    control.__doc__ = {
        "pause": "Hold a running action at its next chunk.",
        "resume": "Carry a paused action on from where it stopped.",
        "cancel": "Stop for good: what was requeued stays requeued, the rest stays open.",
        "approve": "A second operator lets a very large action run.",
    }[verb]
    router.post(f"/bulk/{{pk}}/{verb}", response=responses(BulkOut, 404, 409))(control)


for _verb in ("pause", "resume", "cancel", "approve"):
    _control(_verb)
