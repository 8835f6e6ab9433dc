from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django_tables2 import RequestConfig

from dashboard.filters import AuditFilter
from dashboard.htmx import HtmxHttpRequest
from dashboard.models import AuditEvent
from dashboard.readiness import readiness
from deadletters.models import DeadLetter
from deadletters.tables import AuditTable


def overview(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(hours=1)
    recent = DeadLetter.objects.filter(state=DeadLetter.State.OPEN, failed_at__gte=since)
    return render(request, "dashboard/overview.html", {"open_last_hour": recent.count()})


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
