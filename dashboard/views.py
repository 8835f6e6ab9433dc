"""The site's own pages: the overview, the audit log, a person's theme, and the
health endpoints."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required, permission_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from dashboard.filters import AuditFilter
from dashboard.health import readiness
from dashboard.http import HtmxHttpRequest, drops_empty_params, page_or_fragment, paginate
from dashboard.models import AuditEvent, UserPreference
from dashboard.overview import overview as overview_state
from dashboard.tables import AuditTable


@permission_required("deadletters.view_deadletter", raise_exception=True)
def overview(request: HtmxHttpRequest) -> HttpResponse:
    o = overview_state()
    # The title's state from this very reading, not the cached one of other pages.
    context = {"o": o, "headline": o.headline}
    return page_or_fragment(request, "dashboard/overview.html", "tiles", context)


@require_POST
def theme(request: HttpRequest) -> HttpResponse:
    """Set the signed-in person's theme (the next one when none is named), then
    back to the page they were on. Any role, or none: it changes only their pages."""
    user = request.user
    if not user.is_authenticated:  # LoginRequiredMiddleware sends them to log in first
        raise PermissionDenied
    preference, _ = UserPreference.objects.get_or_create(user=user)
    chosen = request.POST.get("theme") or preference.next_theme
    if chosen not in UserPreference.Theme.values:
        return HttpResponseBadRequest("theme: system, light or dark\n", content_type="text/plain")
    preference.theme = chosen
    preference.save(update_fields=["theme"])
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = "overview"
    return redirect(back)


@permission_required("dashboard.view_auditevent", raise_exception=True)
@drops_empty_params
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
