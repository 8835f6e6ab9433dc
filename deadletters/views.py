"""The dead-letter console: the list, groups, one dead letter and the actions on it."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.contrib.auth.mixins import PermissionRequiredMixin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST
from django_filters.views import FilterView
from django_htmx.http import HttpResponseClientRedirect
from django_tables2 import LazyPaginator, SingleTableMixin

from dashboard.http import (
    HtmxHttpRequest,
    action_response,
    drops_empty_params,
    page_number,
    page_or_fragment,
    paginate,
    without_empty,
)
from deadletters import bulk, selectors
from deadletters.filters import DeadLetterFilter
from deadletters.forms import BulkActionForm, EditRequeueForm
from deadletters.models import BulkAction, DeadLetter
from deadletters.redact import REDACTED, redact, redacted_raw, restore
from deadletters.services import (
    AlreadyHandled,
    BrokerUnavailable,
    NotRequeueable,
    deadletter_discard,
    deadletter_requeue,
)
from deadletters.tables import DeadLetterTable, GroupTable

GROUPS_PER_PAGE = 50


class DeadLetterListView(PermissionRequiredMixin, SingleTableMixin, FilterView):
    permission_required = "deadletters.view_deadletter"
    raise_exception = True
    model = DeadLetter
    table_class = DeadLetterTable
    filterset_class = DeadLetterFilter
    template_name = "deadletters/list.html"
    request: HtmxHttpRequest

    def get_table(self, **kwargs: Any) -> DeadLetterTable:
        table = DeadLetterTable(data=self.get_table_data(), **kwargs)
        # Lazy: a page never counts the whole table.
        per_page = settings.DEADLETTERS_PAGE_SIZE
        return paginate(self.request, table, per_page=per_page, paginator_class=LazyPaginator)

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return DeadLetter.objects.defer(*selectors.BIG_COLUMNS)

    def get_template_names(self) -> list[str]:
        return ["deadletters/list.html#results" if self.request.htmx else self.template_name]

    @method_decorator(drops_empty_params)
    def get(self, request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().get(request, *args, **kwargs)
        table = response.context_data["table"]  # type: ignore[attr-defined]
        asked = page_number(request, table)
        if table.page.number != asked:
            # Past the end (an action emptied the last page, or a hand-made URL):
            # the lazy paginator showed the first; send the reader to the last.
            last = selectors.last_page(
                self.object_list, per_page=settings.DEADLETTERS_PAGE_SIZE, before=asked
            )
            query = request.GET.copy()
            query[table.prefixed_page_field] = str(last)
            url = f"{request.path}?{query.urlencode()}"
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
        if self.filterset.is_bound and not self.filterset.is_valid():
            response.status_code = 422  # the form names each field and why
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        query = self.request.GET.copy()
        for name in ("page", "sort"):
            query.pop(name, None)
        filterset = context["filter"]
        signature = query.get("signature", "")
        group_name = selectors.group_names([signature]).get(signature, f"{signature[:12]}…")
        task_names = selectors.distinct_stats("task_name")
        given = getattr(filterset.form, "cleaned_data", {})  # none when unbound
        context.update(
            group_name=group_name if signature else "",
            filter_query=query.urlencode(),
            filtered=any(v for k, v in query.items()),
            count=selectors.count_filtered(filterset.qs, given)
            if not filterset.is_bound or filterset.is_valid()
            else None,
            confirm_above=settings.DEADLETTERS_CONFIRM_ABOVE,
            canary_above=settings.DEADLETTERS_CANARY_ABOVE,
            canary_size=settings.DEADLETTERS_CANARY_SIZE,
            task_names=task_names,
            # Wide enough for the longest task name known: none is cut off.
            task_size=min(60, max([20, *(len(name) + 2 for name in task_names)])),
            queue_names=selectors.distinct_stats("queue"),
        )
        return context


@permission_required("deadletters.view_deadletter", raise_exception=True)
def groups(request: HtmxHttpRequest) -> HttpResponse:
    show_all = request.GET.get("all") == "1"
    rows = selectors.failure_groups(show_all=show_all, task=request.GET.get("task", ""))
    may_act = any(
        request.user.has_perm(f"deadletters.{a}_deadletter") for a in ("requeue", "discard")
    )
    table = GroupTable(rows, exclude=() if may_act else ("actions",))
    paginate(request, table, per_page=GROUPS_PER_PAGE)
    shown = [row.record for row in table.page.object_list]
    selectors.attach_series(shown)
    if may_act:
        selectors.attach_requeue_blockers(shown)
    context = {
        "table": table,
        "show_all": show_all,
        "confirm_above": settings.DEADLETTERS_CONFIRM_ABOVE,
    }
    return page_or_fragment(request, "deadletters/groups.html", "groups", context)


@permission_required("deadletters.view_deadletter", raise_exception=True)
def detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(
        DeadLetter.objects.select_related("requeued_by", "discarded_by", "requeued_from"), pk=pk
    )
    # htmx polls the actions while a requeued task has not finished.
    return page_or_fragment(
        request, "deadletters/detail.html", "actions", _detail_context(dead_letter)
    )


# A requeue's outcome is awaited (its actions polled) this long at most: a worker
# without the hook never reports one.
OUTCOME_AWAITED = timedelta(hours=1)


def _detail_context(dead_letter: DeadLetter, **result: str) -> dict[str, Any]:
    history = selectors.requeue_chain(dead_letter)
    follow_up = selectors.follow_up(dead_letter, history)
    awaited = (
        dead_letter.state == DeadLetter.State.REQUEUED
        and follow_up is None
        and dead_letter.requeue_outcome in ("", "retried")
        and dead_letter.requeued_at is not None
        and timezone.now() - dead_letter.requeued_at < OUTCOME_AWAITED
    )
    return {
        "dead_letter": dead_letter,
        "args_json": _pretty(redact(dead_letter.args)),
        "kwargs_json": _pretty(redact(dead_letter.kwargs)),
        "headers_json": _pretty(redact(dead_letter.headers)),
        "raw_json": redacted_raw(dead_letter.raw_body),
        "history": history,
        "follow_up": follow_up,
        "outcome_awaited": awaited,
        **result,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@require_POST
@permission_required("deadletters.requeue_deadletter", raise_exception=True)
def requeue(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    status, result = 200, {}
    try:
        task_id = deadletter_requeue(dead_letter=dead_letter, user=request.user)
        result["notice"] = f"Requeued as {task_id}."
    except AlreadyHandled as exc:
        dead_letter, status, result["error"] = exc.dead_letter, 409, str(exc)
    except NotRequeueable as exc:
        status, result["error"] = 409, str(exc)
    except BrokerUnavailable as exc:
        status = 503
        result["error"] = f"Not requeued: {exc}. The dead letter is still open; try again."
    context = _detail_context(dead_letter, **result)
    return action_response(
        request, "deadletters/detail.html", "actions", context, back=dead_letter, status=status
    )


@require_POST
@permission_required("deadletters.discard_deadletter", raise_exception=True)
def discard(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    status, result = 200, {}
    try:
        deadletter_discard(dead_letter=dead_letter, user=request.user)
        result["notice"] = "Discarded."
    except AlreadyHandled as exc:
        dead_letter, status, result["error"] = exc.dead_letter, 409, str(exc)
    context = _detail_context(dead_letter, **result)
    return action_response(
        request, "deadletters/detail.html", "actions", context, back=dead_letter, status=status
    )


@permission_required("deadletters.change_deadletter", raise_exception=True)
def edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Change args, kwargs or the queue, then requeue. Secrets stay as they were."""
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    if not request.user.has_perm("deadletters.requeue_deadletter"):
        raise PermissionDenied
    initial = {
        "args": _pretty(redact(dead_letter.args)),
        "kwargs": _pretty(redact(dead_letter.kwargs)),
        "queue": dead_letter.queue,
    }
    form = EditRequeueForm(request.POST or None, initial=initial)
    context: dict[str, Any] = {"dead_letter": dead_letter, "form": form, "redacted": REDACTED}
    if request.method != "POST" or not form.is_valid():
        status = 422 if request.method == "POST" else 200
        return render(request, "deadletters/edit.html", context, status=status)
    try:
        task_id = deadletter_requeue(
            dead_letter=dead_letter,
            user=request.user,
            args=restore(form.cleaned_data["args"], dead_letter.args),
            kwargs=restore(form.cleaned_data["kwargs"], dead_letter.kwargs),
            queue=form.cleaned_data["queue"],
            reason=form.cleaned_data["reason"],
        )
    except (AlreadyHandled, NotRequeueable, BrokerUnavailable) as exc:
        status = 503 if isinstance(exc, BrokerUnavailable) else 409
        context["error"] = str(exc)
        return render(request, "deadletters/edit.html", context, status=status)
    messages.success(request, f"Requeued with your changes as {task_id}.")
    return redirect(dead_letter)


@require_POST
def bulk_create(request: HtmxHttpRequest) -> HttpResponse:
    if not any(request.user.has_perm(f"deadletters.{a}_deadletter") for a in BulkAction.Action):
        raise PermissionDenied
    form = BulkActionForm(request.POST)
    page = "deadletters/bulk_form_errors.html"
    template = f"{page}#feedback" if request.htmx else page
    context: dict[str, Any] = {
        "form": form,
        "back_url": f"{reverse('deadletters:list')}?{request.POST.get('filter_query', '')}",
    }
    if not form.is_valid():
        return render(request, template, context, status=422)
    data = form.cleaned_data
    if not request.user.has_perm(f"deadletters.{data['action']}_deadletter"):
        raise PermissionDenied
    scope_ids = data["ids"] if data["scope"] == "selected" else None
    # The set is fixed at the first click: a confirmation carries back the newest
    # id then, so the number typed is the number acted on.
    max_id = bulk.newest_id() if data["max_id"] is None else data["max_id"]
    try:
        bulk.confirm_size(
            filter_query=data["filter_query"],
            selected_ids=scope_ids,
            confirmation=data["confirm"],
            max_id=max_id,
        )
    except bulk.NeedsConfirmation as exc:
        context.update(total=exc.total, max_id=exc.max_id, needs_confirm=True)
        return render(request, template, context, status=422)
    action = bulk.create(
        user=request.user,
        action=data["action"],
        reason=data["reason"],
        filter_query=data["filter_query"],
        selected_ids=scope_ids,
        max_id=max_id,
        skip_canary=data["skip_canary"],
        rate=data["rate"],
    )
    url = action.get_absolute_url()
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _bulk_context(request: HtmxHttpRequest, action: BulkAction) -> dict[str, Any]:
    # Stored as the list's form sent it: an action from before empty fields
    # were dropped still links to a clean URL.
    query = without_empty(QueryDict(action.filter_query)).urlencode()
    list_url = reverse("deadletters:list") + (f"?{query}" if query else "")
    requeue = action.action == BulkAction.Action.REQUEUE
    outcomes = selectors.requeue_outcomes(action) if requeue else None
    # Outcomes go on arriving once the action is done: their part polls on while
    # some have not run, for as long as one is awaited.
    awaited = outcomes is not None and (
        not action.is_finished
        or (
            outcomes.pending > 0
            and action.finished_at is not None
            and timezone.now() - action.finished_at < OUTCOME_AWAITED
        )
    )
    may_act = request.user.has_perm(f"deadletters.{action.action}_deadletter")
    return {
        "action": action,
        "scope": bulk.named_scope(action),
        "list_url": list_url,
        "outcomes": outcomes,
        "outcome_awaited": awaited,
        "failed_again": selectors.failed_again_groups(action) if requeue else [],
        "may_act": may_act,
        "may_approve": may_act and action.created_by_id != request.user.pk,
    }


@permission_required("deadletters.view_deadletter", raise_exception=True)
def bulk_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    action = get_object_or_404(
        BulkAction.objects.select_related("created_by", "approved_by"), pk=pk
    )
    context = _bulk_context(request, action)
    outcomes = context["outcomes"]
    part = "outcomes" if outcomes and request.htmx.target == "requeue-outcomes" else "progress"
    return page_or_fragment(request, "deadletters/bulk.html", part, context)


BULK_CONTROLS = {
    "pause": bulk.pause,
    "resume": bulk.resume,
    "cancel": bulk.cancel,
    "approve": bulk.approve,
}


@require_POST
def bulk_control(request: HtmxHttpRequest, pk: int, verb: str) -> HttpResponse:
    """Pause, resume, cancel or (a second operator) approve a bulk action."""
    act = BULK_CONTROLS.get(verb)
    action = get_object_or_404(BulkAction, pk=pk)
    if act is None:
        raise Http404(f"no control {verb!r}")
    if not request.user.has_perm(f"deadletters.{action.action}_deadletter"):
        raise PermissionDenied
    status, result = 200, {}
    try:
        action = act(action, user=request.user)
        result["notice"] = f"{action.get_state_display()}."
    except (bulk.NotAllowedNow, bulk.SamePerson) as exc:
        status, result["error"] = 409, str(exc)
    context = {**_bulk_context(request, action), **result}
    return action_response(
        request, "deadletters/bulk.html", "progress", context, back=action, status=status
    )
