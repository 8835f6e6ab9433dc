from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest


def banners(request: HttpRequest) -> dict[str, Any]:
    """Site-wide warnings, from stored state only (never the broker)."""
    if not settings.DEADLETTERS_MAX_OPEN or not request.user.is_authenticated:
        return {}
    from deadletters.selectors import open_cap_reached

    return {"open_cap_reached": open_cap_reached(), "open_cap": settings.DEADLETTERS_MAX_OPEN}
