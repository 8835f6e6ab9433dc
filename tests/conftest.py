"""Shared parts: the test's own Redis, a real worker, personas, and helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from kombu import Connection, Exchange, Queue

from dashboard.embedded_redis import EmbeddedRedis
from deadletters.models import DeadLetter
from tests import testenv

ROOT = Path(__file__).resolve().parent.parent
DEMO_QUEUES = ("default", "emails", "reports")


def need(condition: bool, reason: str) -> None:
    """Skip when a part is missing here; CI (OPS_REQUIRE_ALL) turns it into a failure."""
    if not condition:
        pytest.skip(reason)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(interval)


def sample_until(
    sampler: Callable[[], object], check: Callable[[], Any], timeout: float = 20.0
) -> Any:
    """Run the monitor's sampler round after round until ``check`` holds."""

    def probe() -> Any:
        sampler()
        return check()

    return wait_until(probe, timeout=timeout)


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
    _empty_queues(client)
    yield client
    client.close()


def _empty_queues(client: redis.Redis) -> None:
    # Not FLUSHALL: the worker's exchange bindings live in Redis too.
    keys = list(client.scan_iter(match="deadletters*"))
    for queue in (*DEMO_QUEUES, "requeue-target"):
        keys += list(client.scan_iter(match=f"{queue}*"))
    if keys:
        client.delete(*keys)


def dead_letter_queue_length(client: redis.Redis) -> int:
    return sum(
        int(client.llen(key))
        for key in client.scan_iter(match="deadletters*")
        if client.type(key) == b"list"
    )


def publish_raw(
    url: str,
    body: Any,
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
    serializer: str | None = None,
    queue: str = "deadletters",
    headers: dict[str, Any] | None = None,
) -> None:
    """Publish one message to a queue through kombu, as any producer would."""
    with Connection(url) as conn:
        target = Queue(queue, Exchange(queue, type="direct", durable=True), routing_key=queue)
        conn.Producer().publish(
            body,
            exchange=target.exchange,
            routing_key=queue,
            declare=[target],
            content_type=content_type,
            content_encoding=content_encoding,
            serializer=serializer,
            headers=headers,
        )


def make_envelope(**overrides: Any) -> dict[str, Any]:
    """A valid v1 envelope, as ``deadletters.hook`` publishes it."""
    task_id = str(uuid.uuid4())
    envelope: dict[str, Any] = {
        "v": 1,
        "id": task_id,
        "task": "demo.tasks.resize_image",
        "args": [42, [64, 128]],
        "kwargs": {"quality": 90},
        "lossy": False,
        "queue": "default",
        "exchange": "",
        "routing_key": "default",
        "priority": 0,
        "retries": 0,
        "root_id": task_id,
        "parent_id": None,
        "group_id": None,
        "eta": None,
        "expires": None,
        "headers": {"x_sent_at": time.time(), "x_queue": "default"},
        "hostname": "worker1@host",
        "kind": "exception",
        "exception_type": "ValueError",
        "exception_message": "image 42 has an unsupported colour profile",
        "traceback": "Traceback (most recent call last):\n  ...\nValueError: image 42",
        "failed_at": datetime.now(UTC).isoformat(),
        "requeued_from": None,
    }
    envelope.update(overrides)
    return envelope


def publish_envelope(url: str, envelope: dict[str, Any]) -> None:
    publish_raw(url, envelope, serializer="json")


def ingest() -> int:
    """Drain the dead-letter queue into the database in this process."""
    from dashboard.monitor import Monitor

    return Monitor().run(until_empty=True).stored


def ingest_until(count: int, timeout: float = 30.0) -> list[DeadLetter]:
    """Ingest until the table holds ``count`` rows (and fail if it never does)."""

    def enough() -> bool:
        ingest()
        return DeadLetter.objects.count() >= count

    wait_until(enough, timeout=timeout, interval=0.3)
    return list(DeadLetter.objects.order_by("id"))


# --- the monitor as a process ------------------------------------------------


def publish_many(url: str, count: int) -> set[str]:
    """Publish ``count`` valid envelopes durably; returns their task ids."""
    ids = set()
    queue = Queue(
        "deadletters",
        Exchange("deadletters", type="direct", durable=True),
        routing_key="deadletters",
    )
    with Connection(url) as conn:
        producer = conn.Producer()
        for _ in range(count):
            envelope = make_envelope()
            ids.add(envelope["id"])
            producer.publish(
                envelope,
                exchange=queue.exchange,
                routing_key="deadletters",
                declare=[queue],
                serializer="json",
                delivery_mode=2,
            )
    return ids


def start_monitor(*args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """``manage.py monitor`` on the test database and Redis; its output goes to a log file."""
    log = testenv.DATA_DIR / f"monitor-{time.monotonic_ns()}.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "monitor", *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


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


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(
    url: str, name: str, *extra: str, backend: str | None = None, app: str = "demo.celery_app"
) -> WorkerProcess:
    """A real worker (of the demo app by default); ``extra`` options override the defaults.

    ``backend``: the result backend, when the broker cannot be one (RabbitMQ).
    """
    log = testenv.DATA_DIR / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
    env = dict(os.environ, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=backend or url)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "-Q",
            ",".join(DEMO_QUEUES),
            "-n",
            f"{name}@%h",
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    handle = WorkerProcess(process, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker exited:\n{handle.log_text()[-3000:]}")
        return " ready." in handle.log_text()

    wait_until(ready, timeout=60)
    return handle


def stop_worker(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture(scope="session")
def worker(redis_server: EmbeddedRedis) -> Iterator[WorkerProcess]:
    """The demo app's real prefork worker, with the hook, on the test Redis."""
    handle = start_worker(redis_server.url, "tests")
    yield handle
    stop_worker(handle)


# --- the database, seen from other processes ------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must use the test database."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        url = f"sqlite:///{settings['NAME']}"
    else:
        auth = settings["USER"] or ""
        if settings.get("PASSWORD"):
            auth += f":{settings['PASSWORD']}"
        host = settings["HOST"] or "127.0.0.1"
        port = settings["PORT"] or 5432
        url = f"postgres://{auth}@{host}:{port}/{settings['NAME']}"
    env = dict(os.environ, DATABASE_URL=url, PYTHONUNBUFFERED="1")
    env.update(extra)  # a test may point the child at another database
    return env


# --- personas -----------------------------------------------------------------


def make_user(username: str, *, group: str | None = None, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password="correct horse battery staple")
    if superuser:
        user.is_superuser = user.is_staff = True
        user.save()
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


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


def make_dead_letters(count: int, **overrides: Any) -> list[DeadLetter]:
    """Stored dead letters, through the real parser and the real ingest."""
    from deadletters.envelope import InboundMessage
    from deadletters.ingest import store_batch

    envelopes = [make_envelope(**overrides) for _ in range(count)]
    bodies = [json.dumps(envelope).encode() for envelope in envelopes]
    store_batch(
        [
            InboundMessage(body=body, content_type="application/json", content_encoding="utf-8",
                           raw=body)
            for body in bodies
        ]
    )  # fmt: skip
    return list(DeadLetter.objects.filter(task_id__in=[e["id"] for e in envelopes]).order_by("id"))


def make_dead_letter(**overrides: Any) -> DeadLetter:
    (row,) = make_dead_letters(1, **overrides)
    return row
