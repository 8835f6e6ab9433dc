"""``ops workers`` controls (pool, autoscale, revoke), ``ops periodic`` (the
entries and run now) and ``ops audit``: what the workers, periodic and audit
pages offer, through their services and selectors."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import QueryDict

from dashboard.broker.control import Replies
from dashboard.cli.base import (
    NOT_DONE,
    NOT_FOUND,
    UNAVAILABLE,
    USAGE,
    OpsError,
    Output,
    acting_user,
    cut,
    may_read,
    require,
    table,
    text,
    when,
)
from dashboard.filters import AuditFilter
from dashboard.models import AuditEvent, PeriodicEntry, WorkerSnapshot
from dashboard.periodic import services as periodic_services
from dashboard.periodic.selectors import beat_state
from dashboard.queues import services


def _worker(hostname: str) -> WorkerSnapshot:
    worker = WorkerSnapshot.objects.filter(hostname=text("HOSTNAME", hostname)).first()
    if worker is None:
        raise OpsError(f"no known worker {hostname[:255]!r} (ops workers lists them)", NOT_FOUND)
    return worker


def _replies(replies: Replies, said: str) -> Output:
    data = {"replies": replies.as_details(), "ok": not replies.errors}
    text = f"{said}: {replies.summary(messages=True)}."
    if replies.errors:
        return Output(data, "", code=NOT_DONE, errors=[text])
    return Output(data, text)


def pool(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_worker", doing="resize worker pools")
    worker = _worker(options["hostname"])
    try:
        replies = services.worker_pool_resize(
            hostname=worker.hostname, action=options["change"], n=options["n"], user=user
        )
    except services.InvalidControl as exc:
        raise OpsError(str(exc), USAGE) from None
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not sent: {exc}", UNAVAILABLE) from None
    return _replies(replies, f"{options['change'].capitalize()} {worker.hostname}")


def autoscale(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_worker", doing="autoscale workers")
    worker = _worker(options["hostname"])
    try:
        replies = services.worker_autoscale(
            hostname=worker.hostname, maximum=options["max"], minimum=options["min"], user=user
        )
    except services.InvalidControl as exc:
        raise OpsError(f"--max/--min: {exc}", USAGE) from None
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not sent: {exc}", UNAVAILABLE) from None
    return _replies(replies, f"Autoscale {worker.hostname}")


def revoke(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_worker", doing="revoke tasks")
    try:
        replies = services.task_revoke(
            task_id=options["task_id"], terminate=options["terminate"], user=user
        )
    except services.InvalidControl as exc:
        raise OpsError(f"TASK_ID: {exc}", USAGE) from None
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not revoked: {exc}", UNAVAILABLE) from None
    data = {"task_id": options["task_id"].strip(), "replies": replies.as_details()}
    return Output(data, f"Revoked {options['task_id'].strip()}: {replies.summary()}.")


def periodic(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "dashboard.view_periodicentry", doing="read periodic entries")
    state = beat_state()
    alive = [f"{beat.hostname} pid {beat.pid}" for beat in state.alive]
    data = {
        "beats_alive": alive,
        "down": state.down,
        "results": [
            {
                "name": row.entry.name,
                "task": row.entry.task,
                "schedule": row.entry.schedule,
                "queue": row.entry.queue,
                "enabled": row.entry.enabled,
                "late": row.late,
                "duplicate": row.duplicate,
                "last_sent_at": row.entry.last_sent_at,
                "next_due": row.entry.next_due,
            }
            for row in state.entries
        ],
    }
    text = table(
        ("ENTRY", "TASK", "SCHEDULE", "LAST SENT", "NEXT DUE", "STATE"),
        [
            (
                row.entry.name,
                row.entry.task,
                cut(row.entry.schedule, 30) or "-",
                when(row.entry.last_sent_at),
                when(row.entry.next_due),
                ", ".join(
                    word
                    for word, on in (
                        ("disabled", not row.entry.enabled),
                        ("late", row.late),
                        ("sent by two beats", row.duplicate),
                    )
                    if on
                ),
            )
            for row in state.entries
        ],
        empty="No periodic entries reported.",
    )
    said = f"Beat alive: {', '.join(alive)}." if alive else "No beat alive."
    return Output(data, f"{text}\n{said}")


def periodic_run(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.run_periodicentry", doing="run periodic entries")
    entry = PeriodicEntry.objects.filter(name=text("NAME", options["name"])).first()
    if entry is None:
        raise OpsError(f"no periodic entry {options['name'][:255]!r}", NOT_FOUND)
    try:
        # One command is one click: its own token.
        task_id = periodic_services.run_now(entry=entry, token=uuid.uuid4().hex, user=user)
    except (periodic_services.NotRunnable, periodic_services.AlreadySent) as exc:
        raise OpsError(str(exc), NOT_DONE) from None
    except periodic_services.BrokerUnavailable as exc:
        raise OpsError(f"not sent: {exc}", UNAVAILABLE) from None
    data = {"name": entry.name, "task": entry.task, "task_id": task_id}
    return Output(data, f"Sent {entry.task} for {entry.name} now, as task {task_id}.")


AUDIT_FLAGS = {"username": "--who", "action": "--action", "since": "--since", "target": "--target"}


def audit(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "dashboard.view_auditevent", doing="read the audit")
    params = QueryDict(mutable=True)
    for field, flag in AUDIT_FLAGS.items():
        if options.get(flag[2:]) is not None:
            params[field] = options[flag[2:]]
    events = AuditFilter(params, queryset=AuditEvent.objects.order_by("-at", "-id"))
    if not events.is_valid():
        said = "; ".join(
            f"{AUDIT_FLAGS[name]}: {' '.join(str(e) for e in errors)}"
            for name, errors in events.errors.items()
        )
        raise OpsError(said, USAGE)
    rows = list(events.qs[: options["limit"] or 50])
    data = {
        "results": [
            {
                "id": event.pk,
                "at": event.at,
                "username": event.username,
                "action": event.action,
                "target_type": event.target_type,
                "target_ids": event.target_ids,
                "target_filter": event.target_filter,
                "count": event.count,
                "reason": event.reason,
                "details": event.details,
            }
            for event in rows
        ]
    }
    text = table(
        ("AT", "WHO", "ACTION", "TARGET", "COUNT", "VIA", "REASON"),
        [
            (
                when(event.at),
                event.username or "-",
                event.action,
                cut(", ".join(event.target_ids) or event.target_filter or "-", 40),
                event.count,
                (event.details or {}).get("via", "-"),
                cut(event.reason, 40) or "-",
            )
            for event in rows
        ],
        empty="No audit events match.",
    )
    return Output(data, text)
