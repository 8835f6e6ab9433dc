"""What every page shows: a banner for a broker that cannot be reached, from
stored state only (never the broker itself)."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest

from dashboard.models import CollectorStatus
from dashboard.monitor.status import ingest_trouble


def banners(request: HttpRequest) -> dict[str, Any]:
    """``broker_failure`` (the broker collector's status while it fails) and
    ``ingest_trouble`` (why dead-letter ingestion looks stuck, or '').

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
            ).first(),
            "ingest_trouble": ingest_trouble(),
        }
    except DatabaseError:
        return {}
    request._ops_banners = context  # type: ignore[attr-defined]
    return context
