"""Publishing tasks: the one place where the dashboard sends task messages.

Requeues go out through the site's Celery app (``dashboard.celery``), so that
they are built exactly as Celery builds them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery.utils.nodenames import anon_nodename
from kombu import Producer, Queue
from kombu.common import Broadcast

from dashboard.broker import BROKER_ERRORS, BrokerUnavailable
from dashboard.celery import app

# Messages per Redis pipeline in ``publish_tasks``: also the most that a broker
# lost during a flush can leave uncertain.
PIPELINE = 100


@dataclass(frozen=True)
class Published:
    """How far ``publish_tasks`` got through its messages, which it sends in order.

    The first ``accepted`` reached the broker. The next ``uncertain`` were handed
    to it, but it went away before it answered: they may or may not be queued.
    None after those was sent. ``error`` says why it stopped, or is empty.
    """

    accepted: int
    uncertain: int = 0
    error: str = ""


def _stamped(headers: Mapping[str, Any] | None, queue: str) -> dict[str, Any]:
    custom = dict(headers or {})
    custom["x_sent_at"] = time.time()
    custom["x_queue"] = queue
    return custom


def _route(queue: str, exchange: str, routing_key: str) -> dict[str, Any]:
    if queue:
        return {"queue": queue}
    if routing_key:
        return {"exchange": exchange, "routing_key": routing_key}
    return {}


def publish_task(
    *,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    task_id: str,
    queue: str,
    exchange: str = "",
    routing_key: str = "",
    priority: int | None = None,
    headers: dict[str, Any] | None = None,
    parent_id: str | None = None,
    root_id: str | None = None,
) -> None:
    """Send a task message; raise ``BrokerUnavailable`` if the broker refused it.

    ``headers`` are custom headers only: ``send_task(headers=...)`` is merged
    over Celery's protocol headers, so a protocol name here would overwrite it.
    """
    try:
        app.send_task(
            name,
            args=args,
            kwargs=kwargs,
            task_id=task_id,
            priority=priority,
            headers=_stamped(headers, queue),
            parent_id=parent_id,
            root_id=root_id,
            retries=0,
            **_route(queue, exchange, routing_key),
        )
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable(f"the broker did not accept the message: {exc}") from exc


def publish_tasks(messages: Sequence[Mapping[str, Any]]) -> Published:
    """Send many task messages, each given as ``publish_task``'s keyword arguments.

    They go in order through one producer and, on Redis, in pipelines of
    ``PIPELINE`` messages instead of a round trip each. The messages are what
    ``publish_task`` sends, built by the same Celery calls, less the per-message
    costs of ``send_task`` that a requeue does not need: ``saferepr`` of the
    arguments, and with a Redis result backend a subscription to each result.
    A broker error never raises: the answer says how far it got.
    """
    accepted = in_flight = 0
    try:
        with app.producer_or_acquire() as producer:
            # kombu 5.7 batches on Redis only, and a batch needs the PING below.
            redis_batch = producer.connection.transport.driver_type == "redis"
            if not (redis_batch and producer.supports_batch_publish):
                send = _Sender(producer, batched=False).send
                for message in messages:
                    send(message)
                    accepted += 1
                return Published(accepted)
            send = _Sender(producer, batched=True).send
            # Flushed by us only, so that we know which messages a failure concerns.
            with producer.batch(sys.maxsize) as batch:
                for sent, message in enumerate(messages, 1):
                    send(message)
                    if sent % PIPELINE and sent < len(messages):
                        continue
                    # A Redis that is gone fails here, before it was handed anything.
                    producer.channel.client.ping()
                    in_flight = sent - accepted
                    batch.flush()
                    accepted, in_flight = sent, 0
    except BROKER_ERRORS as exc:
        return Published(accepted, in_flight, f"the broker did not accept the messages: {exc}")
    return Published(accepted)


class _Sender:
    """``send_task`` for many messages: what they share is looked up once."""

    def __init__(self, producer: Producer, *, batched: bool) -> None:
        self.producer = producer
        self.amqp = app.amqp
        self.reply_to = app.thread_oid
        self.sent_event = app.conf.task_send_sent_event
        self.origin = anon_nodename()
        # In a batch, no retry: a retry reconnects, and could send again what a
        # pipeline already delivered. Without a batch, Celery's retry policy.
        self.retry = False if batched else None
        # Queues are declared once each, not once a message (kombu remembers
        # what it declared on a connection, but finding out costs a copy of the
        # Queue every time). Without a batch, Celery declares as it always does.
        self.declared: set[str] | None = set() if batched else None

    def send(self, message: Mapping[str, Any]) -> None:
        amqp = self.amqp
        name, args, kwargs = message["name"], message["args"], message["kwargs"]
        queue = message["queue"]
        task = amqp.create_task_message(
            message["task_id"],
            name,
            args,
            kwargs,
            retries=0,
            reply_to=self.reply_to,
            create_sent_event=self.sent_event,
            root_id=message.get("root_id"),
            parent_id=message.get("parent_id"),
            ignore_result=None,
            origin=self.origin,
            argsrepr=_repr(args, amqp.argsrepr_maxsize),
            kwargsrepr=_repr(kwargs, amqp.kwargsrepr_maxsize),
        )
        options = amqp.router.route(
            {
                "priority": message.get("priority"),
                "headers": _stamped(message.get("headers"), queue),
                **_route(queue, message.get("exchange", ""), message.get("routing_key", "")),
            },
            name,
            args,
            kwargs,
        )
        if self.declared is not None:
            target = options.get("queue")
            if (
                isinstance(target, Queue)
                and not isinstance(target, Broadcast)
                and target.name not in self.declared
            ):
                self.producer.maybe_declare(target)
                self.declared.add(target.name)
            options["declare"] = []
        amqp.send_task_message(self.producer, name, task, retry=self.retry, **options)


def _repr(value: Any, limit: int) -> str:
    """``argsrepr``/``kwargsrepr``, shown only by monitoring tools: the builtin
    ``repr``, cut at Celery's limit. For JSON values it reads as Celery's
    ``saferepr`` but for details (deep nesting, quoting), at a fraction of its cost.
    """
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
