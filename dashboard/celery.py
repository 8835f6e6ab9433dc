"""The site's own Celery app: the one place where the dashboard publishes tasks.

The web and the monitor never run tasks; they only send them (requeue) through
this app, configured from the ``CELERY_*`` settings.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import KombuError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")

BROKER_ERRORS = (KombuError, OSError, redis.RedisError, AMQPError)


class BrokerUnavailable(Exception):
    """The broker could not take the message; nothing was published."""


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
    custom = dict(headers or {})
    custom["x_sent_at"] = time.time()
    custom["x_queue"] = queue
    route: dict[str, Any] = {"queue": queue} if queue else {}
    if not queue and routing_key:
        route = {"exchange": exchange, "routing_key": routing_key}
    try:
        app.send_task(
            name,
            args=args,
            kwargs=kwargs,
            task_id=task_id,
            priority=priority,
            headers=custom,
            parent_id=parent_id,
            root_id=root_id,
            retries=0,
            **route,
        )
    except BROKER_ERRORS as exc:
        raise BrokerUnavailable(f"the broker did not accept the message: {exc}") from exc
