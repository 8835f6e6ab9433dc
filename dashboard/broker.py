"""How the dashboard reaches its broker: which kind it is, and a Redis client.

The dashboard reads the broker directly (queue depths, the dead-letter queue)
and publishes through the site's Celery app (``dashboard.celery``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from django.conf import settings
from kombu import Connection

REDIS_SCHEMES = {"redis", "rediss", "redis+socket"}
AMQP_SCHEMES = {"amqp", "amqps", "pyamqp"}


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


def redis_priority_keys(queue: str) -> list[str]:
    """The lists that hold one queue on Redis, highest priority first.

    Kombu keeps a message of priority step N in ``queue + sep + str(N)`` and
    step 0 in ``queue`` itself; counting only ``queue`` misses the rest.
    """
    options = transport_options()
    prefix = redis_key_prefix()
    sep = str(options.get("sep", "\x06\x16"))
    steps = options.get("priority_steps") or [0, 3, 6, 9]
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
