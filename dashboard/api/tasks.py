"""Where is task X? The lookup page's answer, for programs."""

from __future__ import annotations

from typing import Annotated

from django.http import HttpRequest
from ninja import Query, Router
from ninja.errors import ValidationError
from pydantic import Field

from dashboard.api.auth import PerToken, require
from dashboard.api.errors import responses
from dashboard.api.schemas import TaskMatches, TaskStoryOut
from dashboard.tasks import lookup

router = Router(tags=["tasks"])

# As the lookup page: it shows the task's dead letters beside the workers' and queues' state.
PERMISSIONS = ("dashboard.view_queuesnapshot", "deadletters.view_deadletter")


def _invalid(where: str, exc: lookup.InvalidTaskId) -> ValidationError:
    return ValidationError([{"loc": [where, exc.field], "msg": exc.message, "type": "task_id"}])


@router.get(
    "/tasks",
    response=responses(TaskMatches, 429),
    throttle=[PerToken("lookup")],
    summary="Task ids that start with a prefix",
)
def task_matches(
    request: HttpRequest,
    q: Annotated[str, Query(description="At least 8 characters of a task id.")],
    limit: Annotated[int, Field(ge=1, le=lookup.MATCHES_SHOWN)] = lookup.MATCHES_SHOWN,
) -> dict[str, object]:
    """Ids seen in the dead letters and the workers' last snapshot, as the header's search
    box lists them: the result backend and the queues can only be asked for a whole id."""
    require(request, *PERMISSIONS)
    try:
        prefix = lookup.clean_task_id(q, field="q", prefix=True)
    except lookup.InvalidTaskId as exc:
        raise _invalid("query", exc) from None
    # One more than asked: whether there are more is then known without a count.
    found = lookup.task_matches(prefix, limit=limit + 1)
    return {"items": found[:limit], "limited": len(found) > limit}


@router.get(
    "/tasks/{name:task_id}",
    response=responses(TaskStoryOut, 429),
    throttle=[PerToken("lookup")],
    url_name="task_story",
    summary="Everything known about one task id",
)
def task_story(request: HttpRequest, task_id: str) -> lookup.TaskStory:
    """What the lookup page shows, read in this one request: the result backend (redacted),
    the dead letters and their requeue chain, the workers' last snapshot, and a bounded
    search of the queues on Redis (``cut_short`` when it may be waiting in what was not
    read). An id nobody knows is an answer too: its summary says so."""
    require(request, *PERMISSIONS)
    try:
        task_id = lookup.clean_task_id(task_id, field="task_id")
    except lookup.InvalidTaskId as exc:
        raise _invalid("path", exc) from None
    return lookup.task_story(task_id)
