"""The periodic page: beat's entries and processes, and run now."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import permission_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.http import require_POST

from dashboard.http import HtmxHttpRequest, action_response, page_or_fragment
from dashboard.models import PeriodicEntry
from dashboard.periodic import services
from dashboard.periodic.selectors import beat_state


def _context(**result: str) -> dict[str, Any]:
    now = timezone.now()
    return {
        "state": beat_state(now, outcomes=True),
        "now": now,
        "late_after": settings.PERIODIC_LATE_AFTER,
        # One per rendering: a double click sends the same token twice, and once.
        "token": uuid.uuid4().hex,
        **result,
    }


@permission_required("dashboard.view_periodicentry", raise_exception=True)
def periodic(request: HtmxHttpRequest) -> HttpResponse:
    return page_or_fragment(request, "dashboard/periodic.html", "state", _context())


@require_POST
@permission_required("dashboard.run_periodicentry", raise_exception=True)
def periodic_run(request: HtmxHttpRequest, name: str) -> HttpResponse:
    entry = get_object_or_404(PeriodicEntry, name=name)
    status, result = 200, {}
    token = request.POST.get("token", "")
    try:
        task_id = services.run_now(entry=entry, token=token, user=request.user)
        result["notice"] = f"Sent {entry.task} for {entry.name} now, as task {task_id}."
    except services.InvalidRun as exc:
        status, result["error"] = 400, f"{exc.field}: {exc}"
    except (services.NotRunnable, services.AlreadySent) as exc:
        status, result["error"] = 409, str(exc)
    except services.BrokerUnavailable as exc:
        status, result["error"] = 503, f"Not sent: {exc}."
    return action_response(
        request, "dashboard/periodic.html", "state", _context(**result), back="periodic",
        status=status,
    )  # fmt: skip
