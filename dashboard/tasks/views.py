"""The task pages: every task name with its figures, and one task in detail."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse

from dashboard.http import HtmxHttpRequest, page_or_fragment, paginate
from dashboard.tasks import selectors
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
