from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django_tables2 import RequestConfig

from dashboard import selectors, services
from dashboard.control import Replies
from dashboard.filters import AuditFilter
from dashboard.htmx import HtmxHttpRequest
from dashboard.models import AuditEvent, WorkerSnapshot
from dashboard.readiness import readiness
from dashboard.tables import QueueTable, WorkerTable
from deadletters.tables import AuditTable

QUEUES_PER_PAGE = 100
WORKERS_PER_PAGE = 100


def _page(
    request: HtmxHttpRequest, template: str, fragment: str, context: dict[str, Any]
) -> HttpResponse:
    """The whole page, or only its refreshing fragment for htmx."""
    return render(request, f"{template}#{fragment}" if request.htmx else template, context)


def _control_response(
    request: HtmxHttpRequest,
    template: str,
    fragment: str,
    context: Callable[[], dict[str, Any]],
    *,
    back: str,
    notice: str = "",
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    """The answer to a control: its fragment for htmx (announced with HX-Trigger);
    without htmx the page with the error, or a redirect after success.
    """
    if request.htmx or status >= 400:
        name = f"{template}#{fragment}" if request.htmx else template
        response = render(
            request, name, {**context(), "notice": notice, "error": error}, status=status
        )
        if status < 400:
            response["HX-Trigger"] = "ops-control"
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, notice)
    return redirect(back)


def overview(request: HtmxHttpRequest) -> HttpResponse:
    return _page(request, "dashboard/overview.html", "tiles", {"o": selectors.overview()})


# --- queues -----------------------------------------------------------------------


def _queue_context(request: HttpRequest) -> dict[str, Any]:
    exclude = () if request.user.has_perm("dashboard.control_queue") else ("actions",)
    table = QueueTable(selectors.queue_rows(), exclude=exclude)
    RequestConfig(request, paginate={"per_page": QUEUES_PER_PAGE}).configure(table)
    selectors.attach_charts([row.record for row in table.page.object_list])
    return {"table": table, "fresh": selectors.broker_freshness()}


def queues(request: HtmxHttpRequest) -> HttpResponse:
    return _page(request, "dashboard/queues.html", "table", _queue_context(request))


def _queue_control(
    request: HtmxHttpRequest, name: str, verb: str, act: Callable[..., Replies]
) -> HttpResponse:
    try:
        replies = act(queue=name, user=request.user)
    except services.NotPaused as exc:
        return _queue_result(request, error=str(exc), status=409)
    except services.BrokerUnavailable as exc:
        return _queue_result(request, error=f"Not {verb}: {exc}.", status=503)
    return _queue_result(request, notice=f"{verb.capitalize()} {name}: {replies.summary()}.")


def _queue_result(request: HtmxHttpRequest, **result: Any) -> HttpResponse:
    return _control_response(
        request,
        "dashboard/queues.html",
        "table",
        lambda: _queue_context(request),
        back="queues",
        **result,
    )


@require_POST
@permission_required("dashboard.control_queue", raise_exception=True)
def queue_pause(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return _queue_control(request, name, "paused", services.queue_pause)


@require_POST
@permission_required("dashboard.control_queue", raise_exception=True)
def queue_resume(request: HtmxHttpRequest, name: str) -> HttpResponse:
    return _queue_control(request, name, "resumed", services.queue_resume)


@permission_required("dashboard.control_queue", raise_exception=True)
def queue_purge(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """GET: the typed confirmation; POST: purge when the typed name matches."""
    queue = selectors.queue_row(name)
    if queue is None:
        raise Http404(f"no known queue {name!r}")
    context: dict[str, Any] = {"queue": queue}
    if request.method != "POST":
        return render(request, "dashboard/queue_purge.html", context)
    try:
        purged = services.queue_purge(
            queue=name, confirmation=request.POST.get("confirm", ""), user=request.user
        )
    except services.ConfirmationMismatch as exc:
        return _purge_result(request, context, error=str(exc), status=422)
    except services.BrokerUnavailable as exc:
        return _purge_result(request, context, error=f"Not purged: {exc}.", status=503)
    return _purge_result(
        request,
        {**context, "done": True},
        notice=f"Purged {purged:,} message{'s' if purged != 1 else ''} from {name}.",
    )


def _purge_result(request: HtmxHttpRequest, context: dict[str, Any], **result: Any) -> HttpResponse:
    return _control_response(
        request, "dashboard/queue_purge.html", "purge", lambda: context, back="queues", **result
    )


# --- workers ----------------------------------------------------------------------


def _workers_context(request: HttpRequest) -> dict[str, Any]:
    table = WorkerTable(selectors.workers())
    RequestConfig(request, paginate={"per_page": WORKERS_PER_PAGE}).configure(table)
    return {"table": table, "fresh": selectors.workers_freshness()}


def workers(request: HtmxHttpRequest) -> HttpResponse:
    return _page(request, "dashboard/workers.html", "table", _workers_context(request))


def worker_detail(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    context = {"worker": worker, "fresh": selectors.workers_freshness()}
    return _page(request, "dashboard/worker_detail.html", "state", context)


def _worker_control(
    request: HtmxHttpRequest,
    worker: WorkerSnapshot,
    act: Callable[..., Replies],
    **arguments: Any,
) -> HttpResponse:
    try:
        replies = act(hostname=worker.hostname, user=request.user, **arguments)
    except services.InvalidControl as exc:
        return _worker_result(request, worker, error=str(exc), status=422)
    except services.BrokerUnavailable as exc:
        return _worker_result(request, worker, error=f"Not sent: {exc}.", status=503)
    if replies.errors:
        return _worker_result(request, worker, error=replies.summary(messages=True))
    return _worker_result(request, worker, notice=replies.summary(messages=True))


def _worker_result(request: HtmxHttpRequest, worker: WorkerSnapshot, **result: Any) -> HttpResponse:
    return _control_response(
        request,
        "dashboard/worker_detail.html",
        "controls",
        lambda: {"worker": worker, "fresh": selectors.workers_freshness()},
        back=worker.get_absolute_url(),
        **result,
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_pool(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    action = request.POST.get("action", "")
    n = _int(request.POST.get("n"), 1)
    return _worker_control(request, worker, services.worker_pool_resize, action=action, n=n)


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_autoscale(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    maximum = _int(request.POST.get("max"), -1)
    minimum = _int(request.POST.get("min"), -1)
    return _worker_control(
        request, worker, services.worker_autoscale, maximum=maximum, minimum=minimum
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def task_revoke(request: HtmxHttpRequest) -> HttpResponse:
    task_id = request.POST.get("task_id", "")
    try:
        replies = services.task_revoke(
            task_id=task_id, terminate=request.POST.get("terminate") == "on", user=request.user
        )
    except services.InvalidControl as exc:
        return _revoke_result(request, error=str(exc), status=422)
    except services.BrokerUnavailable as exc:
        return _revoke_result(request, error=f"Not revoked: {exc}.", status=503)
    return _revoke_result(request, notice=f"Revoked {task_id.strip()}: {replies.summary()}.")


def _revoke_result(request: HtmxHttpRequest, **result: Any) -> HttpResponse:
    return _control_response(
        request,
        "dashboard/workers.html",
        "revoke",
        lambda: _workers_context(request),
        back="workers",
        **result,
    )


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw or "")
    except ValueError:
        return default


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers. Says nothing about the database or the broker."""
    return HttpResponse("ok\n", content_type="text/plain")


def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    """Every operator action: who, what, on which ids or filter, how many, why, when."""
    events = AuditFilter(request.GET, queryset=AuditEvent.objects.all())
    table = AuditTable(events.qs)
    RequestConfig(request, paginate={"per_page": 50}).configure(table)
    template = "dashboard/audit.html#events" if request.htmx else "dashboard/audit.html"
    return render(request, template, {"table": table, "filter": events})


@login_not_required
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Database and broker reachable, the monitor's snapshots fresh: 200, else 503."""
    result = readiness()
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)
