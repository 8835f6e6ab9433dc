"""What every page shows of the dead letters: the banner of a full open cap."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest

from deadletters.selectors import open_cap_reached


def open_cap(request: HttpRequest) -> dict[str, Any]:
    """``open_cap_reached`` when ``DEADLETTERS_MAX_OPEN`` rows are open (never a 500)."""
    if not settings.DEADLETTERS_MAX_OPEN:
        return {}
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    # Once per request: django-tables2 renders each template cell with a
    # RequestContext, which would run this again for every row.
    cached: dict[str, Any] | None = getattr(request, "_ops_open_cap", None)
    if cached is not None:
        return cached
    try:
        context = {
            "open_cap_reached": open_cap_reached(),
            "open_cap": settings.DEADLETTERS_MAX_OPEN,
        }
    except DatabaseError:
        return {}
    request._ops_open_cap = context  # type: ignore[attr-defined]
    return context
