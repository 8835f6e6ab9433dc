"""Queues and workers: the stored snapshots the pages read, and the same controls."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Status

from dashboard.api.auth import PerToken, acting, require
from dashboard.api.errors import responses
from dashboard.api.schemas import (
    AutoscaleIn,
    PoolIn,
    Purged,
    PurgeIn,
    QueueList,
    QueueOut,
    Replies,
    RevokeIn,
    WorkerDetail,
    WorkerList,
)
from dashboard.broker import BrokerUnavailable, control
from dashboard.models import WorkerSnapshot
from dashboard.queues import selectors, services

router = Router(tags=["queues and workers"])

# Queue and worker names may hold a slash: the project's "name" converter
# matches any text but NUL, and the controls are routed before the detail.


def replies_out(replies: control.Replies) -> dict[str, Any]:
    return {**replies.as_details(), "summary": replies.summary(messages=True)}


def _unavailable(what: str, exc: BrokerUnavailable) -> Status[dict[str, str]]:
    return Status(503, {"detail": f"Not {what}: {exc}."})


@router.get("/queues", response=responses(QueueList), summary="Every queue: depth, age, rates")
def queues(request: HttpRequest) -> dict[str, Any]:
    """As the monitor last sampled them; ``sampled_age`` says how long ago."""
    require(request, "dashboard.view_queuesnapshot")
    fresh = selectors.broker_freshness()
    return {
        "items": selectors.queue_rows(),
        "sampled_age": fresh.age,
        "stale": fresh.stale,
    }


@router.post("/queues/{name:name}/pause", response=responses(Replies, 503))
def queue_pause(request: HttpRequest, name: str) -> Any:
    """Every worker stops consuming the queue; resume asks its consumers back."""
    require(request, "dashboard.control_queue")
    try:
        with acting(request):
            return replies_out(services.queue_pause(queue=name, user=request.user))
    except BrokerUnavailable as exc:
        return _unavailable("paused", exc)


@router.post("/queues/{name:name}/resume", response=responses(Replies, 409, 503))
def queue_resume(request: HttpRequest, name: str) -> Any:
    require(request, "dashboard.control_queue")
    try:
        with acting(request):
            return replies_out(services.queue_resume(queue=name, user=request.user))
    except services.NotPaused as exc:
        return Status(409, {"detail": str(exc)})
    except BrokerUnavailable as exc:
        return _unavailable("resumed", exc)


@router.post(
    "/queues/{name:name}/purge",
    response=responses(Purged, 404, 429, 503),
    throttle=[PerToken("purge")],
)
def queue_purge(request: HttpRequest, name: str, payload: PurgeIn) -> Any:
    """Delete every waiting message. ``confirm`` must be the queue's name, as typed on the page."""
    require(request, "dashboard.control_queue")
    if selectors.queue_row(name) is None:
        return Status(404, {"detail": f"No known queue {name!r}."})
    try:
        with acting(request):
            purged = services.queue_purge(
                queue=name, confirmation=payload.confirm, user=request.user
            )
    except services.ConfirmationMismatch as exc:
        return Status(
            422, {"detail": [{"loc": ["body", "confirm"], "msg": str(exc), "type": "confirmation"}]}
        )
    except BrokerUnavailable as exc:
        return _unavailable("purged", exc)
    return {"queue": name, "purged": purged}


@router.get("/queues/{name:name}", response=responses(QueueOut, 404))
def queue(request: HttpRequest, name: str) -> Any:
    require(request, "dashboard.view_queuesnapshot")
    row = selectors.queue_row(name)
    if row is None:
        return Status(404, {"detail": f"No known queue {name!r}."})
    return row


# --- workers -----------------------------------------------------------------------------


@router.get("/workers", response=responses(WorkerList), summary="Every worker the monitor knows")
def workers(request: HttpRequest) -> dict[str, Any]:
    require(request, "dashboard.view_workersnapshot")
    fresh = selectors.workers_freshness()
    return {"items": selectors.workers(), "sampled_age": fresh.age, "stale": fresh.stale}


@router.post("/tasks/revoke", response=responses(Replies, 503))
def task_revoke(request: HttpRequest, payload: RevokeIn) -> Any:
    """Revoke a task by id, on every worker; ``terminate`` also kills it if it runs."""
    require(request, "dashboard.control_worker")
    try:
        with acting(request):
            replies = services.task_revoke(
                task_id=payload.task_id, terminate=payload.terminate, user=request.user
            )
    except services.InvalidControl as exc:
        return Status(
            422, {"detail": [{"loc": ["body", "task_id"], "msg": str(exc), "type": "invalid"}]}
        )
    except BrokerUnavailable as exc:
        return _unavailable("revoked", exc)
    return replies_out(replies)


@router.post("/workers/{name:hostname}/pool", response=responses(Replies, 404, 503))
def worker_pool(request: HttpRequest, hostname: str, payload: PoolIn) -> Any:
    """Grow or shrink the worker's pool by ``n`` processes."""
    require(request, "dashboard.control_worker")
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    try:
        with acting(request):
            replies = services.worker_pool_resize(
                hostname=worker.hostname, action=payload.action, n=payload.n, user=request.user
            )
    except BrokerUnavailable as exc:
        return _unavailable("sent", exc)
    return replies_out(replies)


@router.post("/workers/{name:hostname}/autoscale", response=responses(Replies, 404, 503))
def worker_autoscale(request: HttpRequest, hostname: str, payload: AutoscaleIn) -> Any:
    require(request, "dashboard.control_worker")
    worker = get_object_or_404(WorkerSnapshot, hostname=hostname)
    try:
        with acting(request):
            replies = services.worker_autoscale(
                hostname=worker.hostname,
                maximum=payload.max,
                minimum=payload.min,
                user=request.user,
            )
    except services.InvalidControl as exc:
        return Status(
            422, {"detail": [{"loc": ["body", "min"], "msg": str(exc), "type": "invalid"}]}
        )
    except BrokerUnavailable as exc:
        return _unavailable("sent", exc)
    return replies_out(replies)


@router.get("/workers/{name:hostname}", response=responses(WorkerDetail, 404))
def worker(request: HttpRequest, hostname: str) -> WorkerSnapshot:
    require(request, "dashboard.view_workersnapshot")
    return get_object_or_404(WorkerSnapshot, hostname=hostname)
