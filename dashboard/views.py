from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache

from dashboard.readiness import readiness
from deadletters.models import DeadLetter


def overview(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(hours=1)
    recent = DeadLetter.objects.filter(state=DeadLetter.State.OPEN, failed_at__gte=since)
    return render(request, "dashboard/overview.html", {"open_last_hour": recent.count()})


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
