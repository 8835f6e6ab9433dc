"""Beat's periodic entries, and run now."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Status

from dashboard.api.auth import acting, require
from dashboard.api.errors import responses
from dashboard.api.schemas import PeriodicList, RunNowIn, RunNowOut
from dashboard.models import PeriodicEntry
from dashboard.periodic import services
from dashboard.periodic.selectors import beat_state

router = Router(tags=["periodic"])


@router.get("/periodic", response=responses(PeriodicList), summary="Beat's entries")
def periodic(request: HttpRequest) -> dict[str, Any]:
    require(request, "dashboard.view_periodicentry")
    state = beat_state()
    return {"items": state.entries, "beat_down": state.down}


@router.post("/periodic/{name:name}/run", response=responses(RunNowOut, 404, 409, 503))
def run_now(request: HttpRequest, name: str, payload: RunNowIn) -> Any:
    """Send the entry's task now, as beat would. A retry with the same ``token`` sends nothing."""
    require(request, "dashboard.run_periodicentry")
    entry = get_object_or_404(PeriodicEntry, name=name)
    try:
        with acting(request):
            task_id = services.run_now(entry=entry, token=payload.token, user=request.user)
    except services.InvalidRun as exc:
        return Status(
            422, {"detail": [{"loc": ["body", exc.field], "msg": str(exc), "type": "invalid"}]}
        )
    except (services.NotRunnable, services.AlreadySent) as exc:
        return Status(409, {"detail": str(exc)})
    except services.BrokerUnavailable as exc:
        return Status(503, {"detail": f"Not sent: {exc}."})
    return {"name": entry.name, "task_id": task_id}
