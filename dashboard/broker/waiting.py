"""Is a task still waiting in a queue? A bounded read of the queues on Redis.

Kombu keeps a Redis queue as lists (one per priority step, ``redis_priority_keys``)
of JSON messages whose headers carry the task id. Nothing indexes them by id, so
finding one means reading them: ``LRANGE`` in pages of ``PAGE`` messages, at most
``PER_QUEUE`` messages of each queue and ``IN_ALL`` of all queues in one search.
A message is parsed only when its bytes contain the id. What was not read is
said, never taken for "not there".

The lists are read from the producer end (index 0, the newest message) with
positive indexes: a consumer popping at the other end does not shift them, so
nothing is skipped while the queue drains; a message pushed meanwhile shifts
the page by one and is read twice at most.

The full scan (``scan_slice``) reads every list of every queue to its end,
for the monitor, which asks for a slice of ``SCAN_SLICE`` messages at a time
and keeps the place where the next slice resumes: the monitor's other jobs
wait for one slice at most, and a monitor that stops resumes where it was.

RabbitMQ hands a message only to a consumer that takes it off the queue: it
cannot be searched without consuming, and is not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dashboard import broker
from dashboard.broker.depths import is_plumbing

PAGE = 1_000
PER_QUEUE = 10_000
IN_ALL = 50_000
# Messages one slice of a full scan reads: a few tens of milliseconds of Redis.
SCAN_SLICE = 20_000

AMQP_REASON = (
    "RabbitMQ hands a message only to a consumer that takes it off the "
    "queue: its queues cannot be searched without consuming, so they are not."
)


@dataclass(frozen=True)
class Waiting:
    """The task's message, found in a queue's list."""

    queue: str
    # Kombu's priority step of the list it is in (0 for the queue's own list).
    priority: int
    # Messages between it and the consumer end of its list, when it was read.
    ahead: int
    name: str = ""
    eta: str | None = None
    # The publish stamp (``x_sent_at``), epoch seconds, when the producer had the hook.
    sent_at: float | None = None


@dataclass(frozen=True)
class QueueRead:
    """How much of one queue a search read."""

    queue: str
    # Messages in its lists when the search began.
    total: int
    read: int
    # Every list read to its end (it may have shrunk meanwhile: read < total).
    complete: bool


@dataclass(frozen=True)
class WaitingSearch:
    """What a search of the queues found, and how far it got."""

    searchable: bool
    # Why it could not search, or stopped: empty when it read what it meant to.
    reason: str = ""
    found: list[Waiting] = field(default_factory=list)
    queues: list[QueueRead] = field(default_factory=list)
    # Queues left unread because the search had read IN_ALL messages already.
    unread: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (
            self.searchable
            and not self.reason
            and not self.unread
            and all(q.complete for q in self.queues)
        )


def _needles(task_id: str) -> tuple[bytes, ...]:
    """The id as it may appear in a message's bytes: raw UTF-8, or JSON-escaped."""
    escaped = json.dumps(task_id)[1:-1].encode("ascii")
    plain = task_id.encode("utf-8", "surrogatepass")
    return (escaped,) if escaped == plain else (escaped, plain)


def _match(raw: bytes, task_id: str, needles: tuple[bytes, ...]) -> dict[str, Any] | None:
    """The message's headers when it is the task's message (protocol 2's ``id``
    header, or the ``correlation_id`` Celery sets to the task id in both protocols)."""
    if not any(needle in raw for needle in needles):
        return None
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(message, dict):
        return None
    headers = message.get("headers")
    headers = headers if isinstance(headers, dict) else {}
    properties = message.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    if headers.get("id") == task_id or properties.get("correlation_id") == task_id:
        return headers
    return None


def find_waiting(
    task_id: str,
    queues: Iterable[str],
    *,
    per_queue: int = PER_QUEUE,
    in_all: int = IN_ALL,
    page: int = PAGE,
) -> WaitingSearch:
    """Look for ``task_id``'s message in ``queues`` (in their order), bounded as the
    module says. Never raises for the broker: its errors are the answer's reason."""
    cannot = unsearchable()
    if cannot:
        return WaitingSearch(searchable=False, reason=cannot)
    names = [q for q in dict.fromkeys(queues) if not is_plumbing(q)]
    needles = _needles(task_id)
    _, steps = broker.redis_priority_layout()
    found: list[Waiting] = []
    reads: list[QueueRead] = []
    budget = in_all
    client = broker.redis_client()
    try:
        for index, queue in enumerate(names):
            if budget <= 0:
                return WaitingSearch(True, "", found, reads, names[index:])
            keys = broker.redis_priority_keys(queue)
            lengths = _pipeline_llen(client, keys)
            allowed = min(per_queue, budget)
            read, complete = 0, True
            for key, step, length in zip(keys, steps, lengths, strict=True):
                start = 0
                while start < length:
                    if read >= allowed:
                        complete = False
                        break
                    wanted = min(page, allowed - read)
                    batch = client.lrange(key, start, start + wanted - 1)
                    for offset, raw in enumerate(batch):
                        data = raw if isinstance(raw, bytes) else str(raw).encode()
                        headers = _match(data, task_id, needles)
                        if headers is not None:
                            ahead = length - 1 - start - offset
                            found.append(_waiting(queue, step, ahead, headers))
                    read += len(batch)
                    start += wanted
                    if len(batch) < wanted:
                        break  # consumed meanwhile: the rest of the list is gone
            budget -= read
            reads.append(QueueRead(queue, total=sum(lengths), read=read, complete=complete))
    except broker.BROKER_ERRORS as exc:
        return WaitingSearch(True, f"The broker stopped answering: {exc}", found, reads)
    finally:
        client.close()
    return WaitingSearch(True, "", found, reads)


def unsearchable() -> str:
    """Why the broker's queues cannot be searched, or "" when they can (Redis)."""
    if broker.is_amqp():
        return AMQP_REASON
    if not broker.is_redis():
        return f"A {broker.broker_scheme()!r} broker cannot be searched."
    return ""


def count_waiting(queues: Iterable[str]) -> int:
    """Messages in the queues' lists now (LLEN of each priority list): what a full
    scan has to read, give or take what is published and consumed meanwhile."""
    client = broker.redis_client()
    try:
        keys = [key for q in queues if not is_plumbing(q) for key in broker.redis_priority_keys(q)]
        return sum(_pipeline_llen(client, keys)) if keys else 0
    finally:
        client.close()


@dataclass(frozen=True)
class ScanPlace:
    """Where a full scan resumes: its queue (an index into the scan's list of
    queues), the queue's priority list (an index into its keys) and the next
    index to read in that list."""

    queue: int = 0
    key: int = 0
    start: int = 0


@dataclass(frozen=True)
class ScanSlice:
    """What one slice of a full scan read, and where the next one starts."""

    place: ScanPlace
    read: int
    # Found, or every list read to its end, or the broker failed: nothing to resume.
    finished: bool
    found: Waiting | None = None
    # The broker could not be read (or searched): the scan stops with this.
    reason: str = ""


def scan_slice(
    task_id: str,
    queues: list[str],
    place: ScanPlace,
    *,
    messages: int = SCAN_SLICE,
    page: int = PAGE,
) -> ScanSlice:
    """Read on from ``place`` through ``queues`` (every priority list, newest
    message first) for ``task_id``'s message, at most ``messages`` messages;
    stop when it is found. Never raises for the broker."""
    cannot = unsearchable()
    if cannot:
        return ScanSlice(place, 0, finished=True, reason=cannot)
    needles = _needles(task_id)
    _, steps = broker.redis_priority_layout()
    q, k, start = place.queue, place.key, place.start
    read = 0
    client = broker.redis_client()
    try:
        while q < len(queues):
            keys = [] if is_plumbing(queues[q]) else broker.redis_priority_keys(queues[q])
            if k >= len(keys):
                q, k, start = q + 1, 0, 0
                continue
            if read >= messages:
                return ScanSlice(ScanPlace(q, k, start), read, finished=False)
            wanted = min(page, messages - read)
            # One round trip, and the length the position is counted from.
            pipe = client.pipeline(transaction=True)
            pipe.llen(keys[k])
            pipe.lrange(keys[k], start, start + wanted - 1)
            length, batch = pipe.execute()
            for offset, raw in enumerate(batch):
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                headers = _match(data, task_id, needles)
                if headers is not None:
                    ahead = int(length) - 1 - start - offset
                    found = _waiting(queues[q], steps[k], ahead, headers)
                    place = ScanPlace(q, k, start + offset + 1)
                    return ScanSlice(place, read + offset + 1, finished=True, found=found)
            read += len(batch)
            if len(batch) < wanted:
                k, start = k + 1, 0  # the end of this list
            else:
                start += wanted
    except broker.BROKER_ERRORS as exc:
        reason = f"The broker stopped answering: {exc}"
        return ScanSlice(ScanPlace(q, k, start), read, finished=True, reason=reason)
    finally:
        client.close()
    return ScanSlice(ScanPlace(q, k, start), read, finished=True)


def _pipeline_llen(client: Any, keys: list[str]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.llen(key)
    return [int(n) for n in pipe.execute()]


def _waiting(queue: str, step: int, ahead: int, headers: dict[str, Any]) -> Waiting:
    sent_at = headers.get("x_sent_at")
    eta = headers.get("eta")
    return Waiting(
        queue=queue,
        priority=step,
        ahead=max(0, ahead),
        name=str(headers.get("task") or "")[:255],
        eta=str(eta)[:64] if eta else None,
        sent_at=float(sent_at) if isinstance(sent_at, int | float) else None,
    )
