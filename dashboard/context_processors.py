"""What every page shows: a banner for a broker that cannot be reached, the
cluster's state in the title and icon, and the person's theme; from stored
state only (never the broker itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from dashboard import overview
from dashboard.models import CollectorStatus, UserPreference, next_theme
from dashboard.monitor.status import ingest_trouble


def _signed_in(request: HttpRequest) -> bool:
    return bool(getattr(request, "user", None)) and request.user.is_authenticated


def banners(request: HttpRequest) -> dict[str, Any]:
    """``broker_failure`` (the broker collector's status while it fails) and
    ``ingest_trouble`` (why dead-letter ingestion looks stuck, or '').

    A page must render even when these cannot be read: no banner then, never a 500.
    """
    if not _signed_in(request):
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


def headline(request: HttpRequest) -> dict[str, Any]:
    """``headline``: the cluster's state and its open dead letters ("(35)
    Degraded"), for the title and the icon, or nothing (falsy).

    Lazy: read only by a template that shows it (a full page, a polled
    fragment), never by a table cell or an action's answer. The overview puts
    its own, fresh one in its context, which wins over this.
    """
    if not _signed_in(request):
        return {}

    def read() -> overview.Headline | None:
        # Whoever may not read the overview learns nothing of the cluster from a tab.
        if not request.user.has_perm("deadletters.view_deadletter"):
            return None
        try:
            return overview.headline()
        except DatabaseError:
            return None  # a title without the state, never a 500

    return {"headline": SimpleLazyObject(read)}


@dataclass(frozen=True)
class Theme:
    """The person's theme (``name``: system, light or dark) and the one the
    header's button switches to (``next``)."""

    name: str

    @property
    def next(self) -> str:
        return next_theme(self.name)


def theme(request: HttpRequest) -> dict[str, Any]:
    """``theme``: the signed-in person's, "system" for everyone else (the
    browser's prefers-color-scheme decides)."""
    system = UserPreference.Theme.SYSTEM.value
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"theme": Theme(system)}

    def read() -> Theme:
        try:
            chosen = (
                UserPreference.objects.filter(user=user).values_list("theme", flat=True).first()
            )
        except DatabaseError:
            chosen = None
        return Theme(chosen or system)

    return {"theme": SimpleLazyObject(read)}
