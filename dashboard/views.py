"""The site's own pages: the overview, the audit log, and the health endpoints."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required, permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from dashboard.filters import AuditFilter
from dashboard.health import readiness
from dashboard.http import HtmxHttpRequest, page_or_fragment, paginate
from dashboard.models import AuditEvent
from dashboard.overview import overview as overview_state
from dashboard.tables import AuditTable


@permission_required("deadletters.view_deadletter", raise_exception=True)
def overview(request: HtmxHttpRequest) -> HttpResponse:
    return page_or_fragment(request, "dashboard/overview.html", "tiles", {"o": overview_state()})


@permission_required("dashboard.view_auditevent", raise_exception=True)
def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    """Every operator action: who, what, on which ids or filter, how many, why, when."""
    events = AuditFilter(request.GET, queryset=AuditEvent.objects.all())
    # A filter with an error shows nothing rather than more than it says, as the list does.
    valid = not events.is_bound or events.is_valid()
    table = AuditTable(events.qs if valid else AuditEvent.objects.none())
    paginate(request, table, per_page=50)
    response = page_or_fragment(
        request, "dashboard/audit.html", "events", {"table": table, "filter": events}
    )
    if not valid:
        response.status_code = 422  # the form names each field and why
    return response


@login_not_required
@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """The process answers. Says nothing about the database or the broker."""
    return HttpResponse("ok\n", content_type="text/plain")


@login_not_required
@never_cache
def readyz(request: HttpRequest) -> HttpResponse:
    """Database and broker reachable, the monitor's snapshots fresh: 200, else 503."""
    result = readiness()
    return JsonResponse(result.as_dict(), status=200 if result.ok else 503)
