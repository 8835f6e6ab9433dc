"""Fixtures: the test's own Redis and broker, a real worker, personas.

Helpers that tests import by name live in ``tests.helpers``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from kombu import Connection

from dashboard.models import WorkerSnapshot
from dashboard.monitor.jobs import broker_sampler
from dashboard.queues.sampling import WorkerSampler
from demo.embedded_redis import EmbeddedRedis
from tests import testenv
from tests.helpers import (
    SESSION_WORKER,
    WorkerProcess,
    empty_queues,
    make_user,
    need,
    sample_until,
    start_worker,
    stop_worker,
)

# --- the broker ---------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> EmbeddedRedis:
    return testenv.REDIS


@pytest.fixture
def broker(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A client of the test Redis, with the dead-letter and demo queues emptied."""
    if redis_server.process is None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    empty_queues(client)
    yield client
    client.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The RabbitMQ that CI points TEST_RABBITMQ_URL at, checked to answer."""
    url = os.environ.get("TEST_RABBITMQ_URL", "")
    need(bool(url), "TEST_RABBITMQ_URL is not set (CI points it at a RabbitMQ)")
    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        need(False, f"no RabbitMQ at {url}: {exc}")
    return url


# --- a real worker ------------------------------------------------------------


@pytest.fixture(scope="session")
def worker(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    """The demo app's real prefork worker, with the hook, on the test Redis."""
    handle = start_worker(redis_server.url, "tests")  # SESSION_WORKER
    yield handle
    stop_worker(handle)


@pytest.fixture
def sampled(broker: redis.Redis, worker: WorkerProcess) -> WorkerSampler:
    """The session worker, known to the dashboard as the monitor would know it."""
    sampler = WorkerSampler()
    sample_until(
        sampler,
        lambda: WorkerSnapshot.objects.filter(hostname=SESSION_WORKER).exists(),
        timeout=30,
    )
    broker_sampler()()
    return sampler


# --- personas -----------------------------------------------------------------


@pytest.fixture
def operator(db: None) -> User:
    return make_user("olivia", group="Operator")


@pytest.fixture
def viewer(db: None) -> User:
    return make_user("victor", group="Viewer")


@pytest.fixture
def operator_client(operator: User) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client
