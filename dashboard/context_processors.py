"""What every page shows: a banner while the broker cannot be reached."""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest

from dashboard.models import CollectorStatus


def collectors(request: HttpRequest) -> dict[str, Any]:
    """``broker_failure``: the broker collector's status while it fails, else None.

    A page must render even when this cannot be read: no banner then, never a 500.
    """
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    try:
        failing = CollectorStatus.objects.filter(name="broker", failing_since__isnull=False).first()
    except DatabaseError:
        return {}
    return {"broker_failure": failing}
