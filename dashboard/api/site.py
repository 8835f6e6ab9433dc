"""The audit log and the overview's state."""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Router
from pydantic import Field

from dashboard.api import pagination
from dashboard.api.auth import require
from dashboard.api.errors import responses
from dashboard.api.schemas import AuditPage, OverviewOut
from dashboard.models import AuditEvent
from dashboard.overview import overview as overview_state

router = Router(tags=["audit and overview"])


@router.get("/audit", response=responses(AuditPage), summary="The audit log, newest first")
def audit(
    request: HttpRequest,
    cursor: str | None = None,
    limit: Annotated[int | None, Field(ge=1, le=pagination.MAX_LIMIT)] = None,
) -> dict[str, Any]:
    """Every change, by whom (and through which token), on what, why, when."""
    require(request, "dashboard.view_auditevent")
    rows, next_cursor = pagination.page(AuditEvent.objects.all(), cursor=cursor, limit=limit)
    return {"items": rows, "next_cursor": next_cursor}


@router.get("/overview", response=responses(OverviewOut), summary="The cluster's state in words")
def overview(request: HttpRequest) -> dict[str, Any]:
    """What the overview page and every tab's title say: healthy, degraded or failing, and why."""
    require(request, "deadletters.view_deadletter")
    o = overview_state()
    return {
        "level": o.state.level,
        "word": o.state.word,
        "open_dead_letters": o.dead_letters_open,
        "reasons": [{"level": r.level, "text": r.text} for r in o.state.reasons],
        "verdicts": {tile: {"level": v.level, "text": v.text} for tile, v in o.verdicts.items()},
    }
