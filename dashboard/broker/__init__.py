"""The broker room: the only code that talks to the broker.

This module says which kind of broker it is and hands out a Redis client; its
neighbours read queue depths (``depths``), drain the dead-letter queue
(``inbox``), publish tasks (``publish``) and send Celery's remote control
commands (``control``). Nothing here imports a model.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from amqp.exceptions import AMQPError
from django.conf import settings
from kombu import Connection
from kombu.exceptions import KombuError

REDIS_SCHEMES = {"redis", "rediss", "redis+socket"}
AMQP_SCHEMES = {"amqp", "amqps", "pyamqp"}

# What a broker that is away raises, whichever kind it is.
BROKER_ERRORS = (KombuError, OSError, redis.RedisError, AMQPError)


class BrokerUnavailable(Exception):
    """The broker could not take the message; nothing was published."""


def broker_url() -> str:
    return str(settings.CELERY_BROKER_URL)


def broker_scheme(url: str | None = None) -> str:
    return urlsplit(url or broker_url()).scheme.lower()


def is_redis(url: str | None = None) -> bool:
    return broker_scheme(url) in REDIS_SCHEMES


def is_amqp(url: str | None = None) -> bool:
    return broker_scheme(url) in AMQP_SCHEMES


def transport_options() -> dict[str, Any]:
    return dict(settings.CELERY_BROKER_TRANSPORT_OPTIONS)


def redis_client(url: str | None = None) -> redis.Redis:
    """A client for the Redis broker, with the broker's own timeouts."""
    url = url or broker_url()
    options = transport_options()
    if url.startswith("redis+socket://"):
        url = "unix://" + url.removeprefix("redis+socket://")
    return redis.Redis.from_url(
        url,
        socket_timeout=options.get("socket_timeout", 5),
        socket_connect_timeout=options.get("socket_connect_timeout", 3),
        health_check_interval=30,
    )


def redis_key_prefix() -> str:
    """Kombu's ``global_keyprefix``: every key kombu writes starts with it."""
    return str(transport_options().get("global_keyprefix") or "")


def redis_priority_layout() -> tuple[str, list[int]]:
    """Kombu's separator and priority steps on Redis (transport options ``sep``
    and ``priority_steps``)."""
    options = transport_options()
    steps = options.get("priority_steps") or [0, 3, 6, 9]
    return str(options.get("sep", "\x06\x16")), [int(step) for step in steps]


def redis_priority_keys(queue: str) -> list[str]:
    """The lists that hold one queue on Redis, highest priority first.

    Kombu keeps a message of priority step N in ``queue + sep + str(N)`` and
    step 0 in ``queue`` itself; counting only ``queue`` misses the rest.
    """
    prefix = redis_key_prefix()
    sep, steps = redis_priority_layout()
    return [prefix + queue if step == 0 else f"{prefix}{queue}{sep}{step}" for step in steps]


def ping(timeout: float) -> None:
    """Reach the broker once, within ``timeout`` seconds; raise if it does not answer."""
    url = broker_url()
    if is_redis(url):
        client = redis_client(url)
        # A client of its own: the pool's default timeouts are for real work.
        client.connection_pool.connection_kwargs.update(
            socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            client.ping()
        finally:
            client.close()
        return
    with Connection(url, connect_timeout=timeout, transport_options=transport_options()) as conn:
        conn.ensure_connection(max_retries=0, timeout=max(1, round(timeout)))
