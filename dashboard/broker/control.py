"""Celery's remote control: the one module that calls it.

Inspect's timeout is an idle wait after the last reply, so a round is asked
with ``limit=`` the number of workers we expect: it ends as soon as they have
all answered. An empty answer means nobody replied, which is not the same as
"there are no workers": callers get ``None`` and decide.

Every control returns ``Replies``: which workers answered, and what.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from kombu import Connection
from kombu.pidbox import Mailbox

from dashboard.broker import BROKER_ERRORS, BrokerUnavailable
from dashboard.celery import app

# Registered in the workers by ``deadletters.hook``: everything a round needs,
# in one broadcast (see ``deadletters.hook._ops_snapshot``).
SNAPSHOT_COMMAND = "ops_snapshot"
# Tasks listed per worker and kind (active, reserved, scheduled); counts are exact.
TASK_LIST_LIMIT = 100
# Workers without the hook answer the standard commands instead.
FALLBACK_COMMANDS = ("stats", "active_queues", "active", "reserved", "scheduled", "registered")
ARG_REPR_LIMIT = 200

Report = dict[str, Any]


@dataclass(frozen=True)
class Replies:
    """What the workers answered to one control command."""

    command: str
    ok: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def workers(self) -> list[str]:
        return sorted({*self.ok, *self.errors})

    def summary(self, *, messages: bool = False) -> str:
        """Who replied; with ``messages``, what each said (for one-worker controls)."""
        if not self.workers:
            return "no worker replied"
        parts = [f"{len(self.workers)} worker{'s' if len(self.workers) != 1 else ''} replied"]
        if messages:
            parts += [f"{host}: {text}" for host, text in sorted(self.ok.items())]
        elif self.ok:
            parts.append("ok: " + ", ".join(sorted(self.ok)))
        parts += [f"{host}: {error}" for host, error in sorted(self.errors.items())]
        return "; ".join(parts)

    def as_details(self) -> dict[str, Any]:
        return {"command": self.command, "ok": self.ok, "errors": self.errors}


def connect() -> Connection:
    """A connection to the broker for control commands, established with one try.

    An absent broker fails here, at once. The monitor keeps one open between
    rounds (opening one and its reply queue takes a few milliseconds, a good
    share of a round); a web request opens its own.
    """
    connection = app.connection_for_write()
    _bound_retries(connection)
    try:
        connection.ensure_connection(max_retries=1)
    except BROKER_ERRORS as exc:
        connection.release()
        raise BrokerUnavailable(f"the broker cannot be reached: {exc}") from exc
    return connection


def _bound_retries(connection: Connection) -> None:
    """Make a lost connection fail the command instead of hanging it.

    Every broadcast publishes with ``retry=True`` and no retry policy, and
    kombu then reconnects without end: a broker that went away would hold the
    monitor's samplers (and an operator's click) until it came back.
    """
    ensure = connection.ensure

    def bounded(
        obj: Any, fun: Any, errback: Any = None, max_retries: int | None = None, **options: Any
    ) -> Any:
        return ensure(obj, fun, errback, 1 if max_retries is None else max_retries, **options)

    connection.ensure = bounded  # type: ignore[method-assign,assignment]


@contextmanager
def _connection(given: Connection | None = None) -> Iterator[Connection]:
    if given is not None:
        yield given
        return
    connection = connect()
    try:
        yield connection
    finally:
        connection.release()


def _broadcast(
    command: str,
    *,
    arguments: dict[str, Any] | None = None,
    destination: Sequence[str] | None = None,
    limit: int | None = None,
    connection: Connection | None = None,
) -> list[dict[str, Any]]:
    timeout = settings.MONITOR_INSPECT_TIMEOUT
    with _connection(connection) as conn:
        mailbox: Any = _mailbox()(conn)  # the stubs take it for a Node
        try:
            if destination:
                replies = mailbox.call(list(destination), command, arguments or {}, timeout)
            else:
                replies = mailbox.multi_call(command, arguments or {}, timeout, limit or None)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"the broker went away during {command}: {exc}") from exc
    return list(replies or [])


@cache
def _mailbox() -> Mailbox:
    """Celery's control mailbox, publishing on the connection it is given.

    ``app.control`` publishes through the app's producer pool instead: on a
    connection of its own, made once for whatever broker was configured then,
    and one on which kombu retries without end.
    """
    conf = app.conf
    return Mailbox(
        conf.control_exchange,
        type="fanout",
        accept=conf.accept_content,
        serializer=conf.task_serializer,
        queue_ttl=conf.control_queue_ttl,
        reply_queue_ttl=conf.control_queue_ttl,
        queue_expires=conf.control_queue_expires,
        queue_exclusive=conf.control_queue_exclusive,
        queue_durable=conf.control_queue_durable,
        reply_queue_expires=conf.control_queue_expires,
    )


def _by_worker(replies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for reply in replies:
        if isinstance(reply, dict):
            merged.update(reply)
    return merged


def _replies(command: str, raw: list[dict[str, Any]]) -> Replies:
    ok: dict[str, str] = {}
    errors: dict[str, str] = {}
    for host, answer in _by_worker(raw).items():
        if isinstance(answer, dict) and "error" in answer:
            errors[host] = str(answer["error"])
        elif isinstance(answer, dict):
            ok[host] = str(answer.get("ok", answer))
        else:
            ok[host] = str(answer)
    return Replies(command, ok, errors)


# --- the workers round ------------------------------------------------------------


def snapshot_round(
    *, limit: int | None, connection: Connection | None = None
) -> dict[str, Report] | None:
    """Every worker's state in one broadcast; ``None`` when nobody replied.

    Workers without the hook do not know the command; they are asked the
    standard inspect commands, and their answers are shaped the same way.
    """
    arguments = {"max_tasks": TASK_LIST_LIMIT}
    replies = _by_worker(
        _broadcast(SNAPSHOT_COMMAND, arguments=arguments, limit=limit, connection=connection)
    )
    if not replies:
        return None
    reports: dict[str, Report] = {}
    unequipped = []
    for host, answer in replies.items():
        if isinstance(answer, dict) and "stats" in answer:
            reports[host] = answer
        else:
            unequipped.append(host)
    if unequipped:
        reports.update(_standard_round(unequipped, connection))
    return reports


def _standard_round(hosts: list[str], connection: Connection | None) -> dict[str, Report]:
    """The plain inspect commands, for workers that lack ``ops_snapshot``."""
    reports: dict[str, Report] = {host: {} for host in hosts}
    for command in FALLBACK_COMMANDS:
        arguments = {"safe": True} if command == "active" else {}
        answers = _by_worker(
            _broadcast(command, arguments=arguments, destination=hosts, connection=connection)
        )
        for host, answer in answers.items():
            if host in reports and not (isinstance(answer, dict) and "error" in answer):
                reports[host][command] = answer
    for report in reports.values():
        for kind in ("active", "reserved", "scheduled"):
            tasks = report.get(kind) or []
            report[f"{kind}_count"] = len(tasks)
            report[kind] = tasks[:TASK_LIST_LIMIT]
    return {host: report for host, report in reports.items() if "stats" in report}


_repr = reprlib.Repr()
_repr.maxstring = ARG_REPR_LIMIT
_repr.maxother = ARG_REPR_LIMIT
_repr.maxlevel = 3


def safe_repr(value: object) -> str:
    """A short repr for the page: a string that was a repr already stays as it is."""
    text = value if isinstance(value, str) else _repr.repr(value)
    return text if len(text) <= ARG_REPR_LIMIT else text[: ARG_REPR_LIMIT - 1] + "…"


# --- controls ---------------------------------------------------------------------


def cancel_consumer(queue: str, *, limit: int | None) -> Replies:
    """Every worker stops consuming ``queue``."""
    raw = _broadcast("cancel_consumer", arguments={"queue": queue}, limit=limit)
    return _replies("cancel_consumer", raw)


def add_consumer(queue: str, *, destination: Sequence[str]) -> Replies:
    raw = _broadcast("add_consumer", arguments={"queue": queue}, destination=destination)
    return _replies("add_consumer", raw)


def pool_grow(hostname: str, n: int = 1) -> Replies:
    return _replies(
        "pool_grow", _broadcast("pool_grow", arguments={"n": n}, destination=[hostname])
    )


def pool_shrink(hostname: str, n: int = 1) -> Replies:
    raw = _broadcast("pool_shrink", arguments={"n": n}, destination=[hostname])
    return _replies("pool_shrink", raw)


def autoscale(hostname: str, *, maximum: int, minimum: int) -> Replies:
    raw = _broadcast(
        "autoscale", arguments={"max": maximum, "min": minimum}, destination=[hostname]
    )
    return _replies("autoscale", raw)


def revoke(task_id: str, *, terminate: bool, limit: int | None) -> Replies:
    arguments: dict[str, Any] = {"task_id": task_id, "terminate": terminate}
    if terminate:
        arguments["signal"] = "SIGTERM"
    return _replies("revoke", _broadcast("revoke", arguments=arguments, limit=limit))


def purge(queue: str) -> int:
    """Delete every waiting message of ``queue``; returns how many there were.

    A broker operation, not a worker command: on Redis kombu empties every
    priority list of the queue; messages workers hold already are not touched.
    """
    with _connection() as connection:
        try:
            channel: Any = connection.default_channel  # kombu's stubs know less than it does
            return int(channel.queue_purge(queue) or 0)
        except BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"the broker did not purge {queue!r}: {exc}") from exc
