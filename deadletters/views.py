from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_filters.views import FilterView
from django_htmx.http import HttpResponseClientRedirect
from django_tables2 import LazyPaginator, SingleTableMixin

from dashboard.htmx import HtmxHttpRequest
from deadletters import bulk
from deadletters.filters import DeadLetterFilter
from deadletters.forms import BulkActionForm, EditRequeueForm
from deadletters.models import BulkAction, DeadLetter, DeadLetterGroup, DeadLetterStats
from deadletters.redact import REDACTED, redact, restore
from deadletters.selectors import count_matching, hourly_counts
from deadletters.services import (
    AlreadyHandled,
    BrokerUnavailable,
    NotRequeueable,
    deadletter_discard,
    deadletter_requeue,
)
from deadletters.tables import DeadLetterTable

LIST_DEFERRED = ("traceback", "raw_body", "args", "kwargs", "headers", "search_text")


class DeadLetterListView(SingleTableMixin, FilterView):
    model = DeadLetter
    table_class = DeadLetterTable
    filterset_class = DeadLetterFilter
    template_name = "deadletters/list.html"
    request: HtmxHttpRequest

    def get_table_pagination(self, table: Any) -> dict[str, Any]:
        return {"per_page": settings.DEADLETTERS_PAGE_SIZE, "paginator_class": LazyPaginator}

    def get_queryset(self) -> QuerySet[DeadLetter]:
        return DeadLetter.objects.defer(*LIST_DEFERRED)

    def get_template_names(self) -> list[str]:
        return ["deadletters/list.html#results" if self.request.htmx else self.template_name]

    def get(self, request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().get(request, *args, **kwargs)
        # An action emptied the last page: show the one before instead of nothing.
        table = response.context_data["table"]  # type: ignore[attr-defined]
        page = int(request.GET["page"]) if request.GET.get("page", "").isdigit() else 1
        if page > 1 and (not len(table.page.object_list) or table.page.number != page):
            query = request.GET.copy()
            query["page"] = str(page - 1)
            return _redirect(request, f"{request.path}?{query.urlencode()}")
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        query = self.request.GET.copy()
        for name in ("page", "sort"):
            query.pop(name, None)
        filterset = context["filter"]
        context.update(
            filter_query=query.urlencode(),
            filtered=any(v for k, v in query.items()),
            count=count_matching(filterset.qs)
            if not filterset.is_bound or filterset.is_valid()
            else None,
            confirm_above=settings.DEADLETTERS_CONFIRM_ABOVE,
            task_names=_distinct_stats("task_name"),
            queue_names=_distinct_stats("queue"),
        )
        return context


def _distinct_stats(field: str) -> list[str]:
    values = DeadLetterStats.objects.order_by(field).values_list(field, flat=True).distinct()
    return [v for v in values[:500] if v]


def _redirect(request: HtmxHttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else HttpResponseRedirect(url)


def groups(request: HtmxHttpRequest) -> HttpResponse:
    rows = DeadLetterGroup.objects.order_by("-open", "-last_seen")
    if request.GET.get("all") != "1":
        rows = rows.filter(open__gt=0)
    if request.GET.get("task"):
        rows = rows.filter(task_name=request.GET["task"])
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    series = hourly_counts([group.signature for group in page])
    for group in page:
        group.series = series[group.signature]  # type: ignore[attr-defined]
    template = "deadletters/groups.html#groups" if request.htmx else "deadletters/groups.html"
    return render(
        request,
        template,
        {
            "page": page,
            "show_all": request.GET.get("all") == "1",
            "confirm_above": settings.DEADLETTERS_CONFIRM_ABOVE,
        },
    )


def detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(
        DeadLetter.objects.select_related("requeued_by", "discarded_by", "requeued_from"), pk=pk
    )
    return render(request, "deadletters/detail.html", _detail_context(dead_letter))


def _detail_context(dead_letter: DeadLetter, **extra: object) -> dict[str, object]:
    return {
        "dead_letter": dead_letter,
        "args_json": _pretty(redact(dead_letter.args)),
        "kwargs_json": _pretty(redact(dead_letter.kwargs)),
        "headers_json": _pretty(redact(dead_letter.headers)),
        "history": _history(dead_letter),
        **extra,
    }


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _history(dead_letter: DeadLetter) -> list[DeadLetter]:
    """This failure's chain across requeues, oldest first."""
    related = DeadLetter.objects.select_related("requeued_by", "discarded_by")
    chain = [dead_letter]
    seen = {dead_letter.pk}
    node = dead_letter
    while node.requeued_from_id and node.requeued_from_id not in seen:
        node = related.get(pk=node.requeued_from_id)
        seen.add(node.pk)
        chain.insert(0, node)
    node = dead_letter
    while True:
        later = related.filter(requeued_from_id=node.pk).exclude(pk__in=seen).order_by("id").first()
        if later is None:
            return chain
        seen.add(later.pk)
        chain.append(later)
        node = later


def _actions_response(
    request: HtmxHttpRequest,
    dead_letter: DeadLetter,
    *,
    status: int = 200,
    error: str = "",
    notice: str = "",
) -> HttpResponse:
    """The actions fragment for htmx, else the page (errors) or a redirect (success)."""
    context = _detail_context(dead_letter, error=error, notice=notice)
    if request.htmx:
        response = render(request, "deadletters/detail.html#actions", context, status=status)
        if status == 200:
            response["HX-Trigger"] = "deadletter-changed"
        return response
    if status >= 400:
        return render(request, "deadletters/detail.html", context, status=status)
    messages.success(request, notice)
    return redirect(dead_letter)


def _requeue_failure(
    request: HtmxHttpRequest, dead_letter: DeadLetter, exc: Exception
) -> HttpResponse:
    if isinstance(exc, AlreadyHandled):
        return _actions_response(request, exc.dead_letter, status=409, error=str(exc))
    if isinstance(exc, NotRequeueable):
        return _actions_response(request, dead_letter, status=409, error=str(exc))
    return _actions_response(
        request, dead_letter, status=503,
        error=f"Not requeued: {exc}. The dead letter is still open; try again.",
    )  # fmt: skip


@require_POST
@permission_required("deadletters.requeue_deadletter", raise_exception=True)
def requeue(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    try:
        task_id = deadletter_requeue(dead_letter=dead_letter, user=request.user)
    except (AlreadyHandled, NotRequeueable, BrokerUnavailable) as exc:
        return _requeue_failure(request, dead_letter, exc)
    return _actions_response(request, dead_letter, notice=f"Requeued as {task_id}.")


@require_POST
@permission_required("deadletters.discard_deadletter", raise_exception=True)
def discard(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    try:
        deadletter_discard(dead_letter=dead_letter, user=request.user)
    except AlreadyHandled as exc:
        return _actions_response(request, exc.dead_letter, status=409, error=str(exc))
    return _actions_response(request, dead_letter, notice="Discarded.")


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
    if request.method != "POST":
        return render(request, "deadletters/edit.html", context)
    if not form.is_valid():
        return render(request, "deadletters/edit.html", context, status=422)
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
    form = BulkActionForm(request.POST)
    context: dict[str, Any] = {
        "form": form,
        "base_template": "fragment.html" if request.htmx else "base.html",
        "back_url": f"{reverse('deadletters:list')}?{request.POST.get('filter_query', '')}",
    }
    if not form.is_valid():
        return render(request, "deadletters/bulk_form_errors.html", context, status=422)
    data = form.cleaned_data
    if not request.user.has_perm(f"deadletters.{data['action']}_deadletter"):
        raise PermissionDenied
    scope_ids = data["ids"] if data["scope"] == "selected" else None
    preview = BulkAction(filter_query=data["filter_query"], selected_ids=scope_ids,
                         max_id=2**62)  # fmt: skip
    total = bulk.open_count(bulk.target_rows(preview))
    if total > settings.DEADLETTERS_CONFIRM_ABOVE and data["confirm"].strip() != str(total):
        context.update(total=total, needs_confirm=True)
        return render(request, "deadletters/bulk_form_errors.html", context, status=422)
    action = bulk.create(
        user=request.user,
        action=data["action"],
        reason=data["reason"],
        filter_query=data["filter_query"],
        selected_ids=scope_ids,
    )
    return _redirect(request, action.get_absolute_url())


def bulk_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    action = get_object_or_404(BulkAction.objects.select_related("created_by"), pk=pk)
    template = "deadletters/bulk.html#progress" if request.htmx else "deadletters/bulk.html"
    list_url = reverse("deadletters:list") + (
        f"?{action.filter_query}" if action.filter_query else ""
    )
    return render(request, template, {"action": action, "list_url": list_url})
