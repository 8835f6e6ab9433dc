"""What every page shows: banners for a broker that cannot be reached and a
full dead-letter cap, from stored state only (never the broker itself)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest

from dashboard.models import CollectorStatus


def banners(request: HttpRequest) -> dict[str, Any]:
    """``broker_failure`` (the broker collector's status while it fails) and the open cap.

    A page must render even when these cannot be read: no banner then, never a 500.
    """
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    # Once per request: django-tables2 renders each template cell with a
    # RequestContext, which would run this again for every row.
    cached: dict[str, Any] | None = getattr(request, "_ops_banners", None)
    if cached is not None:
        return cached
    try:
        context: dict[str, Any] = {
            "broker_failure": CollectorStatus.objects.filter(
                name="broker", failing_since__isnull=False
            ).first()
        }
        if settings.DEADLETTERS_MAX_OPEN:
            from deadletters.selectors import open_cap_reached

            context.update(
                open_cap_reached=open_cap_reached(), open_cap=settings.DEADLETTERS_MAX_OPEN
            )
    except DatabaseError:
        return {}
    request._ops_banners = context  # type: ignore[attr-defined]
    return context
