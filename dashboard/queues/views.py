"""The queue and worker pages and their controls."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.broker import BrokerUnavailable
from dashboard.http import HtmxHttpRequest, action_response, page_or_fragment, paginate
from dashboard.models import WorkerSnapshot
from dashboard.queues import selectors, services
from dashboard.queues.tables import QueueTable, WorkerTable

QUEUES_PER_PAGE = 100
WORKERS_PER_PAGE = 100


def _queues_context(request: HttpRequest, **result: str) -> dict[str, Any]:
    exclude = () if request.user.has_perm("dashboard.control_queue") else ("actions",)
    table = QueueTable(selectors.queue_rows(), exclude=exclude)
    paginate(request, table, per_page=QUEUES_PER_PAGE)
    selectors.attach_charts([row.record for row in table.page.object_list])
    return {"table": table, "fresh": selectors.broker_freshness(), **result}


@permission_required("dashboard.view_queuesnapshot", raise_exception=True)
def queues(request: HtmxHttpRequest) -> HttpResponse:
    return page_or_fragment(request, "dashboard/queues.html", "table", _queues_context(request))


def _queue_context(request: HtmxHttpRequest, name: str, **result: str) -> dict[str, Any]:
    page = selectors.queue_page(name)
    context: dict[str, Any] = {
        "name": name,
        "page": page,
        "fresh": selectors.broker_freshness(),
        **result,
    }
    if page is not None and not request.htmx:
        # Only the whole page draws the day: its points change every 15 minutes.
        context["day"] = selectors.queue_history(
            name, selectors.DAY_WINDOW, step=selectors.DAY_STEP
        )
    return context


@permission_required("dashboard.view_queuesnapshot", raise_exception=True)
def queue_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    context = _queue_context(request, name)
    if context["page"] is None:
        # The page itself says that no such queue is known, and where queues come from.
        return render(request, "dashboard/queue_detail.html", context, status=404)
    return page_or_fragment(request, "dashboard/queue_detail.html", "state", context)


def _queue_action_response(
    request: HtmxHttpRequest, name: str, status: int, result: dict[str, str]
) -> HttpResponse:
    """Pause and resume answer the page they were sent from: the queue's own
    (its form says ``from=queue``) or the queues table."""
    if request.POST.get("from") == "queue":
        context = _queue_context(request, name, **result)
        if context["page"] is not None:
            back = reverse("queue_detail", args=[name])
            return action_response(
                request, "dashboard/queue_detail.html", "state", context, back=back, status=status
            )
    context = _queues_context(request, **result)
    return action_response(
        request, "dashboard/queues.html", "table", context, back="queues", status=status
    )


@require_POST
@permission_required("dashboard.control_queue", raise_exception=True)
def queue_pause(request: HtmxHttpRequest, name: str) -> HttpResponse:
    status, result = 200, {}
    try:
        replies = services.queue_pause(queue=name, user=request.user)
        result["notice"] = f"Paused {name}: {replies.summary()}."
    except BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not paused: {exc}."
    return _queue_action_response(request, name, status, result)


@require_POST
@permission_required("dashboard.control_queue", raise_exception=True)
def queue_resume(request: HtmxHttpRequest, name: str) -> HttpResponse:
    status, result = 200, {}
    try:
        replies = services.queue_resume(queue=name, user=request.user)
        result["notice"] = f"Resumed {name}: {replies.summary()}."
    except services.NotPaused as exc:
        status, result["error"] = 409, str(exc)
    except BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not resumed: {exc}."
    return _queue_action_response(request, name, status, result)


@permission_required("dashboard.control_queue", raise_exception=True)
def queue_purge(request: HtmxHttpRequest, name: str) -> HttpResponse:
    """GET: the typed confirmation; POST: purge when the typed name matches."""
    queue = selectors.queue_row(name)
    if queue is None:
        raise Http404(f"no known queue {name!r}")
    context: dict[str, Any] = {"queue": queue}
    if request.method != "POST":
        return render(request, "dashboard/queue_purge.html", context)
    status = 200
    try:
        purged = services.queue_purge(
            queue=name, confirmation=request.POST.get("confirm", ""), user=request.user
        )
        s = "s" if purged != 1 else ""
        context.update(done=True, notice=f"Purged {purged:,} message{s} from {name}.")
    except services.ConfirmationMismatch as exc:
        status, context["error"] = 422, str(exc)
    except BrokerUnavailable as exc:
        status, context["error"] = 503, f"Not purged: {exc}."
    return action_response(
        request, "dashboard/queue_purge.html", "purge", context, back="queues", status=status
    )


def _workers_context(request: HttpRequest, **result: str) -> dict[str, Any]:
    workers = selectors.workers()
    table = WorkerTable(workers, checks=selectors.fleet_checks(workers))
    paginate(request, table, per_page=WORKERS_PER_PAGE)
    return {"table": table, "fresh": selectors.workers_freshness(), **result}


@permission_required("dashboard.view_workersnapshot", raise_exception=True)
def workers(request: HtmxHttpRequest) -> HttpResponse:
    return page_or_fragment(request, "dashboard/workers.html", "table", _workers_context(request))


@permission_required("dashboard.view_workersnapshot", raise_exception=True)
def worker_detail(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    if request.htmx:  # the polled state, which shows no checks
        context = {"worker": worker, "fresh": selectors.workers_freshness()}
    else:
        context = _worker_context(worker)
    return page_or_fragment(request, "dashboard/worker_detail.html", "state", context)


def _worker_context(worker: WorkerSnapshot, **result: str) -> dict[str, Any]:
    checks = selectors.fleet_checks([worker])[worker.hostname]
    return {"worker": worker, "checks": checks, "fresh": selectors.workers_freshness(), **result}


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_check_silence(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    status, result = 200, {}
    try:
        silence, created = services.check_silence(
            worker=worker,
            check=request.POST.get("check", ""),
            scope=request.POST.get("scope", ""),
            queue=request.POST.get("queue", ""),
            reason=request.POST.get("reason", ""),
            user=request.user,
        )
        said = f"{silence.check_name} for {silence.scope} {silence.target}"
        result["notice"] = (
            f"Silenced {said}."
            if created
            else f"{said.capitalize()} was silenced already, by {silence.username or 'someone'}."
        )
    except services.InvalidSilence as exc:
        status, result["error"] = 422, str(exc)
    return action_response(
        request,
        "dashboard/worker_detail.html",
        "checks",
        _worker_context(worker, **result),
        back=worker,
        status=status,
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_check_unsilence(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    check, scope = request.POST.get("check", ""), request.POST.get("scope", "")
    status, result = 200, {}
    try:
        silence = services.check_unsilence(
            worker=worker,
            check=check,
            scope=scope,
            queue=request.POST.get("queue", ""),
            user=request.user,
        )
        result["notice"] = (
            f"{check} is no longer silenced for {silence.scope} {silence.target}."
            if silence is not None
            else f"{check} was not silenced (any more)."
        )
    except services.InvalidSilence as exc:
        status, result["error"] = 422, str(exc)
    return action_response(
        request,
        "dashboard/worker_detail.html",
        "checks",
        _worker_context(worker, **result),
        back=worker,
        status=status,
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_pool(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    action, n = request.POST.get("action", ""), _int(request.POST.get("n"), 1)
    status, result = 200, {}
    try:
        replies = services.worker_pool_resize(
            hostname=worker.hostname, action=action, n=n, user=request.user
        )
        result["error" if replies.errors else "notice"] = replies.summary(messages=True)
    except services.InvalidControl as exc:
        status, result["error"] = 422, str(exc)
    except BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not sent: {exc}."
    context = _worker_context(worker, **result)
    return action_response(
        request, "dashboard/worker_detail.html", "controls", context, back=worker, status=status
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def worker_autoscale(request: HtmxHttpRequest, hostname: str) -> HttpResponse:
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    maximum, minimum = _int(request.POST.get("max"), -1), _int(request.POST.get("min"), -1)
    status, result = 200, {}
    try:
        replies = services.worker_autoscale(
            hostname=worker.hostname, maximum=maximum, minimum=minimum, user=request.user
        )
        result["error" if replies.errors else "notice"] = replies.summary(messages=True)
    except services.InvalidControl as exc:
        status, result["error"] = 422, str(exc)
    except BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not sent: {exc}."
    context = _worker_context(worker, **result)
    return action_response(
        request, "dashboard/worker_detail.html", "controls", context, back=worker, status=status
    )


@require_POST
@permission_required("dashboard.control_worker", raise_exception=True)
def task_revoke(request: HtmxHttpRequest) -> HttpResponse:
    task_id = request.POST.get("task_id", "")
    status, result = 200, {}
    try:
        replies = services.task_revoke(
            task_id=task_id, terminate=request.POST.get("terminate") == "on", user=request.user
        )
        result["notice"] = f"Revoked {task_id.strip()}: {replies.summary()}."
    except services.InvalidControl as exc:
        status, result["error"] = 422, str(exc)
    except BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not revoked: {exc}."
    context = _workers_context(request, **result)
    return action_response(
        request, "dashboard/workers.html", "revoke", context, back="workers", status=status
    )


def _int(raw: str | None, default: int) -> int:
    try:
        return int(raw or "")
    except ValueError:
        return default
