"""``ops queues``, ``ops workers`` and ``ops state``: the stored snapshots the
pages read (never the broker or an inspect round), and the queue controls."""

from __future__ import annotations

from typing import Any

from dashboard.cli.base import (
    NOT_DONE,
    NOT_FOUND,
    UNAVAILABLE,
    USAGE,
    OpsError,
    Output,
    acting_user,
    facts,
    may_read,
    rate,
    require,
    seconds,
    table,
    text,
    when,
)
from dashboard.overview import overview
from dashboard.queues import selectors, services
from dashboard.queues.selectors import Freshness


def _fresh(fresh: Freshness) -> dict[str, Any]:
    return {"age_seconds": fresh.age, "stale": fresh.stale}


def _fresh_line(what: str, fresh: Freshness) -> str:
    if fresh.age is None:
        return f"No {what} sample yet: is the monitor running?"
    stale = " (stale: is the monitor running?)" if fresh.stale else ""
    return f"{what.capitalize()} sampled {seconds(fresh.age)} ago{stale}."


def queues(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "dashboard.view_queuesnapshot", doing="read queues")
    rows = selectors.queue_rows()
    fresh = selectors.broker_freshness()
    data = {
        "freshness": _fresh(fresh),
        "results": [
            {
                "name": row.name,
                "exists": row.exists,
                "depth": row.depth,
                "ready": row.ready,
                "unacked": row.unacked,
                "oldest_age_seconds": row.oldest_age,
                "in_rate": row.in_rate,
                "out_rate": row.out_rate,
                "consumers": row.consumers,
                "broker_consumers": row.broker_consumers,
                "paused": row.paused is not None,
                "paused_by": row.paused.username if row.paused else None,
                "is_dead_letter_queue": row.is_dead_letter_queue,
                "missing_consumer": row.missing_consumer,
                "sampled_at": row.sampled_at,
            }
            for row in rows
        ],
    }
    text = table(
        ("QUEUE", "DEPTH", "OLDEST", "IN", "OUT", "CONSUMERS", "STATE"),
        [
            (
                row.name,
                "-" if row.depth is None else row.depth,
                seconds(row.oldest_age),
                rate(row.in_rate),
                rate(row.out_rate),
                len(row.consumers) or row.broker_consumers or 0,
                f"paused by {row.paused.username or 'someone'}"
                if row.paused
                else "no consumer"
                if row.missing_consumer
                else "",
            )
            for row in rows
        ],
        empty="No queues known yet.",
    )
    return Output(data, f"{text}\n{_fresh_line('queues', fresh)}")


def queue_pause(options: dict[str, Any]) -> Output:
    name = _queue_name(options)
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_queue", doing="pause queues")
    try:
        replies = services.queue_pause(queue=name, user=user)
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not paused: {exc}", UNAVAILABLE) from None
    data = {"queue": name, "paused": True, "replies": replies.as_details()}
    return Output(data, f"Paused {name}: {replies.summary()}.")


def queue_resume(options: dict[str, Any]) -> Output:
    name = _queue_name(options)
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_queue", doing="resume queues")
    try:
        replies = services.queue_resume(queue=name, user=user)
    except services.NotPaused as exc:
        raise OpsError(str(exc), NOT_DONE) from None
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not resumed: {exc}", UNAVAILABLE) from None
    data = {"queue": name, "paused": False, "replies": replies.as_details()}
    return Output(data, f"Resumed {name}: {replies.summary()}.")


def queue_purge(options: dict[str, Any]) -> Output:
    name = _queue_name(options)
    user = acting_user(options["user"], required=True)
    require(user, "dashboard.control_queue", doing="purge queues")
    if selectors.queue_row(name) is None:
        raise OpsError(f"no known queue {name!r}", NOT_FOUND)
    try:
        purged = services.queue_purge(queue=name, confirmation=options["confirm"], user=user)
    except services.ConfirmationMismatch as exc:
        raise OpsError(f"--confirm: {exc}", USAGE) from None
    except services.BrokerUnavailable as exc:
        raise OpsError(f"not purged: {exc}", UNAVAILABLE) from None
    s = "s" if purged != 1 else ""
    return Output({"queue": name, "purged": purged}, f"Purged {purged:,} message{s} from {name}.")


def _queue_name(options: dict[str, Any]) -> str:
    """A queue name as the pages' URLs take it: 1 to 255 characters, no NUL."""
    name = text("NAME", options["name"])
    if not name:
        raise OpsError("NAME: the queue's name", USAGE)
    return name


def workers(options: dict[str, Any]) -> Output:
    user = acting_user(options["user"], required=False)
    may_read(user, "dashboard.view_workersnapshot", doing="read workers")
    rows = selectors.workers()
    fresh = selectors.workers_freshness()
    data = {
        "freshness": _fresh(fresh),
        "results": [
            {
                "hostname": w.hostname,
                "online": w.online,
                "last_seen_at": w.last_seen_at,
                "pool": w.pool,
                "concurrency": w.concurrency,
                "active": w.active_count,
                "reserved": w.reserved_count,
                "processed": w.processed,
                "queues": w.queues,
                "sw_ver": w.sw_ver,
            }
            for w in rows
        ],
    }
    text = table(
        ("WORKER", "STATE", "LAST SEEN", "POOL", "ACTIVE", "PROCESSED", "QUEUES"),
        [
            (
                w.hostname,
                "online" if w.online else "offline",
                when(w.last_seen_at),
                f"{w.pool or '-'} x{w.concurrency if w.concurrency is not None else '?'}",
                w.active_count,
                w.processed,
                ",".join(w.queues or []) or "-",
            )
            for w in rows
        ],
        empty="No workers seen yet.",
    )
    return Output(data, f"{text}\n{_fresh_line('workers', fresh)}")


def state(options: dict[str, Any]) -> Output:
    """The overview's headline: the cluster's state, why, and its main figures."""
    user = acting_user(options["user"], required=False)
    may_read(user, "deadletters.view_deadletter", doing="read the overview")
    o = overview()
    data = {
        "state": o.state.level,
        "reasons": [{"level": r.level, "text": r.text} for r in o.state.reasons],
        "dead_letters_open": o.dead_letters_open,
        "backlog": o.backlog,
        "worst_queue": o.worst_queue,
        "worst_age_seconds": o.worst_age,
        "workers_online": o.workers_online,
        "verdicts": {name: {"level": v.level, "text": v.text} for name, v in o.verdicts.items()},
        "broker": _fresh(o.broker),
        "workers": _fresh(o.workers),
    }
    reasons = "\n".join(f"  {r.level}: {r.text}" for r in o.state.reasons)
    pairs: list[tuple[str, Any]] = [
        ("State", o.state.word),
        ("Open dead letters", o.dead_letters_open),
        ("Backlog", "-" if o.backlog is None else o.backlog),
        ("Oldest message", f"{seconds(o.worst_age)} on {o.worst_queue or '-'}"),
        ("Workers online", o.workers_online),
    ]
    text = facts(pairs) + (f"\nWhy:\n{reasons}" if reasons else "")
    return Output(data, text)
