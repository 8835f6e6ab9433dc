from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django_tables2 import LazyPaginator, RequestConfig

from dashboard.htmx import HtmxHttpRequest
from deadletters.models import DeadLetter
from deadletters.services import (
    AlreadyHandled,
    BrokerUnavailable,
    NotRequeueable,
    deadletter_discard,
    deadletter_requeue,
)
from deadletters.tables import DeadLetterTable

LIST_FIELDS_DEFERRED = ("traceback", "raw_body", "args", "kwargs", "headers")


def dead_letter_list(request: HtmxHttpRequest) -> HttpResponse:
    rows = DeadLetter.objects.defer(*LIST_FIELDS_DEFERRED).order_by("-failed_at", "-id")
    table = DeadLetterTable(rows)
    RequestConfig(
        request,
        paginate={"per_page": settings.DEADLETTERS_PAGE_SIZE, "paginator_class": LazyPaginator},
    ).configure(table)
    template = "deadletters/list.html#table" if request.htmx else "deadletters/list.html"
    return render(request, template, {"table": table})


def detail(request: HttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(
        DeadLetter.objects.select_related("requeued_by", "discarded_by", "requeued_from"), pk=pk
    )
    return render(request, "deadletters/detail.html", _detail_context(dead_letter))


def _detail_context(dead_letter: DeadLetter, **extra: object) -> dict[str, object]:
    return {
        "dead_letter": dead_letter,
        "args_json": json.dumps(dead_letter.args, indent=2, ensure_ascii=False),
        "kwargs_json": json.dumps(dead_letter.kwargs, indent=2, ensure_ascii=False),
        "headers_json": json.dumps(dead_letter.headers, indent=2, ensure_ascii=False),
        "history": _history(dead_letter),
        **extra,
    }


def _history(dead_letter: DeadLetter) -> list[DeadLetter]:
    """This failure's chain across requeues, oldest first."""
    chain = [dead_letter]
    seen = {dead_letter.pk}
    node = dead_letter
    while node.requeued_from_id and node.requeued_from_id not in seen:
        node = DeadLetter.objects.select_related("requeued_by", "discarded_by").get(
            pk=node.requeued_from_id
        )
        seen.add(node.pk)
        chain.insert(0, node)
    node = dead_letter
    while True:
        later = (
            DeadLetter.objects.select_related("requeued_by", "discarded_by")
            .filter(requeued_from_id=node.pk)
            .exclude(pk__in=seen)
            .order_by("id")
            .first()
        )
        if later is None:
            break
        seen.add(later.pk)
        chain.append(later)
        node = later
    return chain


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


@require_POST
@permission_required("deadletters.requeue_deadletter", raise_exception=True)
def requeue(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    dead_letter = get_object_or_404(DeadLetter, pk=pk)
    try:
        task_id = deadletter_requeue(dead_letter=dead_letter, user=request.user)
    except AlreadyHandled as exc:
        return _actions_response(request, exc.dead_letter, status=409, error=str(exc))
    except NotRequeueable as exc:
        return _actions_response(request, dead_letter, status=409, error=str(exc))
    except BrokerUnavailable as exc:
        return _actions_response(
            request,
            dead_letter,
            status=503,
            error=f"Not requeued: {exc}. The dead letter is still open; try again.",
        )
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
