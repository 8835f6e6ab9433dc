"""The task pages: every task name with its figures, one task in detail, and
"where is task X?" for one task id."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from dashboard.http import HtmxHttpRequest, action_response, page_or_fragment, paginate
from dashboard.tasks import lookup, queue_scan, selectors
from dashboard.tasks.tables import TaskTable
from deadletters.selectors import failure_groups

TASKS_PER_PAGE = 100
GROUPS_SHOWN = 5


def _windows(request: HttpRequest, current: selectors.Window) -> list[dict[str, Any]]:
    """The window tabs: this URL with another window (and the first page)."""
    tabs = []
    for window in selectors.WINDOWS.values():
        query = request.GET.copy()
        query["window"] = window.key
        query.pop("page", None)
        tabs.append({"window": window, "query": query.urlencode(), "current": window == current})
    return tabs


@permission_required("dashboard.view_queuesnapshot", raise_exception=True)
def tasks(request: HtmxHttpRequest) -> HttpResponse:
    window = selectors.window_named(request.GET.get("window"))
    table = TaskTable(selectors.task_figures(window), window=window.key)
    paginate(request, table, per_page=TASKS_PER_PAGE)
    context = {"table": table, "window": window, "windows": _windows(request, window)}
    return page_or_fragment(request, "dashboard/tasks.html", "figures", context)


@permission_required("dashboard.view_queuesnapshot", raise_exception=True)
def task_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    window = selectors.window_named(request.GET.get("window"))
    task = selectors.task_detail(name, window)
    if task is None:
        raise Http404(f"no worker reported task {name!r}")
    context = {
        "task": task,
        "window": window,
        "windows": _windows(request, window),
        "groups": list(failure_groups(task=name)[:GROUPS_SHOWN]),
    }
    return page_or_fragment(request, "dashboard/task_detail.html", "figures", context)


# Both: the lookup shows a task's dead letters beside the workers' and queues' state.
LOOKUP_PERMISSIONS = ["dashboard.view_queuesnapshot", "deadletters.view_deadletter"]


@permission_required(LOOKUP_PERMISSIONS, raise_exception=True)
def task_search(request: HtmxHttpRequest) -> HttpResponse:
    """The header's search box: a whole id opens its page; a prefix lists the ids it
    starts (one match opens it)."""
    try:
        query = lookup.clean_task_id(request.GET.get("q"), field="q", prefix=True)
    except lookup.InvalidTaskId as exc:
        given = request.GET.get("q", "")[: lookup.MAX_ID]
        return render(request, "tasks/lookup.html", {"error": str(exc), "query": given}, status=400)
    if lookup.looks_whole(query):
        return redirect(lookup.lookup_url(query))
    matches = lookup.task_matches(query)
    if len(matches) == 1:
        return redirect(lookup.lookup_url(matches[0].task_id))
    context = {"query": query, "matches": matches, "shown": lookup.MATCHES_SHOWN}
    return render(request, "tasks/lookup.html", context)


@permission_required(LOOKUP_PERMISSIONS, raise_exception=True)
def task_lookup(request: HtmxHttpRequest, task_id: str) -> HttpResponse:
    try:
        task_id = lookup.clean_task_id(task_id, field="task_id")
    except lookup.InvalidTaskId as exc:
        return render(request, "tasks/lookup.html", {"error": str(exc)}, status=400)
    context = {"story": lookup.task_story(task_id), "scan": queue_scan.latest_scan(task_id)}
    return render(request, "tasks/lookup.html", context)


@require_http_methods(["GET", "POST"])
@permission_required(LOOKUP_PERMISSIONS, raise_exception=True)
def task_queue_scan(request: HtmxHttpRequest) -> HttpResponse:
    """The monitor's full scan of the queues for a task id: asked for with a POST
    (operators), its state for the lookup page's poll with a GET."""
    asking = request.method == "POST"
    if asking and not request.user.has_perm("dashboard.add_tasksearch"):
        raise PermissionDenied
    data = request.POST if asking else request.GET
    try:
        task_id = lookup.clean_task_id(data.get("task_id"), field="task_id")
    except lookup.InvalidTaskId as exc:
        return render(request, "tasks/lookup.html", {"error": str(exc)}, status=400)
    back = lookup.lookup_url(task_id)
    if not asking:
        if not request.htmx:
            return redirect(back)
        context = {"task_id": task_id, "scan": queue_scan.latest_scan(task_id)}
        return render(request, "tasks/lookup.html#queue-scan", context)
    status, context = 200, {"task_id": task_id}
    try:
        _, made = queue_scan.request_scan(task_id=task_id, user=request.user)
        context["notice"] = (
            "The monitor will read the whole queues for this id."
            if made
            else "A full scan for this id is already under way."
        )
    except queue_scan.CannotScan as exc:
        status, context["error"] = 409, str(exc)
    context["scan"] = queue_scan.latest_scan(task_id)
    return action_response(
        request, "tasks/lookup.html", "queue-scan", context, back=back, status=status
    )
