"""Task outcomes for the page tests, as a worker's hook reports them (report v1)
and as the monitor stores them: through the real ``store_outcomes``.

``runs(...)`` describes what one task did in one minute; ``report(...)`` is the
message a process would send; ``fold(...)`` hands it to the monitor's store.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from dashboard.broker.inbox import InboundMessage
from dashboard.models import OUTCOME_BUCKETS


def bucket(seconds: float) -> int:
    """The histogram bucket of an observation: the first upper bound it does not pass."""
    return next((i for i, b in enumerate(OUTCOME_BUCKETS) if seconds <= b), len(OUTCOME_BUCKETS))


@dataclass
class Runs:
    task: str
    at: datetime | None = None
    queue: str = "default"
    succeeded: int = 0
    # Failures by exception type.
    failed: dict[str, int] = field(default_factory=dict)
    retried: int = 0
    runtimes: list[float] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)


def runs(task: str, **fields: Any) -> Runs:
    return Runs(task, **fields)


def _histogram(minute: int, r: Runs, kind: str, values: list[float]) -> list[Any]:
    counts = [0] * (len(OUTCOME_BUCKETS) + 1)
    for value in values:
        counts[bucket(value)] += 1
    return [minute, r.task, r.queue, kind, counts, sum(values)]


def report(
    *described: Runs, requeues: list[dict[str, Any]] | None = None, hostname: str = "w1@host"
) -> InboundMessage:
    """One process's report of ``described``, with a process id of its own."""
    counts: list[list[Any]] = []
    histograms: list[list[Any]] = []
    for r in described:
        minute = int((r.at or timezone.now()).timestamp() // 60)
        if r.succeeded:
            counts.append([minute, r.task, r.queue, "succeeded", "", r.succeeded])
        for exception, n in r.failed.items():
            counts.append([minute, r.task, r.queue, "failed", exception, n])
        if r.retried:
            counts.append([minute, r.task, r.queue, "retried", "", r.retried])
        if r.runtimes:
            histograms.append(_histogram(minute, r, "runtime", r.runtimes))
        if r.waits:
            histograms.append(_histogram(minute, r, "wait", r.waits))
    body = json.dumps(
        {
            "type": "outcomes",
            "v": 1,
            "process": f"1-{uuid.uuid4().hex[:12]}",
            "seq": 1,
            "hostname": hostname,
            "pid": 1,
            "sent_at": timezone.now().timestamp(),
            "buckets": list(OUTCOME_BUCKETS),
            "counts": counts,
            "histograms": histograms,
            "requeues": requeues or [],
            "dropped": 0,
        }
    ).encode()
    return InboundMessage(
        body=body,
        content_type="application/json",
        content_encoding="utf-8",
        raw=body,
        headers={"x_ops_report": "outcomes"},
    )


def fold(*described: Runs, requeues: list[dict[str, Any]] | None = None) -> None:
    """Store a report as the monitor does (outcomes added up, requeues noted)."""
    from dashboard.monitor.jobs import store_outcomes

    result = store_outcomes([report(*described, requeues=requeues)])
    assert result.quarantined == 0, "the report was not readable"


def requeue_outcome(
    task_id: str, state: str, *, at: datetime | None = None, runtime: float | None = None
) -> dict[str, Any]:
    """The outcome of a requeued task (``task_id``: its new id), as the hook reports it."""
    return {
        "task_id": task_id,
        "requeued_from": "",
        "state": state,
        "at": (at or timezone.now()).timestamp(),
        "runtime": runtime,
    }
