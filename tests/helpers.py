"""What the tests share besides fixtures: the test's own processes, data and personas.

``conftest.py`` holds the fixtures; everything a test imports by name is here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import Group, User
from django.db import connection
from kombu import Connection, Exchange, Queue

from deadletters.models import DeadLetter
from demo.workers import DEMO_QUEUES, worker_command
from tests import testenv

ROOT = Path(__file__).resolve().parent.parent
HOST = socket.gethostname()
# The session's worker (the ``worker`` fixture), as the dashboard names it.
SESSION_WORKER = f"tests@{HOST}"


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


def empty_queues(client: redis.Redis) -> None:
    """Empty the dead-letter and outcome queues, and the demo's."""
    # Not FLUSHALL: the worker's exchange bindings live in Redis too.
    keys = list(client.scan_iter(match="deadletters*"))
    keys += list(client.scan_iter(match="ops.outcomes*"))
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
    from dashboard.monitor.loop import Monitor

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


# --- a real worker ------------------------------------------------------------


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(
    url: str,
    name: str,
    *extra: str,
    backend: str | None = None,
    app: str = "demo.celery_app",
    env: dict[str, str] | None = None,
    pool: str = "prefork",
) -> WorkerProcess:
    """A real worker (of the demo app by default), started once it says it is ready.

    ``extra`` options override the defaults of ``demo.workers.worker_command``.
    ``backend``: the result backend, when the broker cannot be one (RabbitMQ).
    ``env``: more of the worker's environment. ``pool``: given here, not in
    ``extra``: Celery reads the first ``-P`` to decide whether to patch for gevent.
    """
    log = testenv.DATA_DIR / f"worker-{name}-{uuid.uuid4().hex[:6]}.log"
    # A team's worker: no Django settings of the dashboard's (Celery's Django
    # fix-up would set the site up inside the worker, and with it the hook).
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env = dict(
        inherited, CELERY_BROKER_URL=url, CELERY_RESULT_BACKEND=backend or url, **(env or {})
    )
    process = subprocess.Popen(
        worker_command(name, app=app, pool=pool, extra=extra),
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


# --- personas and stored dead letters --------------------------------------------


def make_user(username: str, *, group: str | None = None, superuser: bool = False) -> User:
    user = User.objects.create_user(username, password="correct horse battery staple")
    if superuser:
        user.is_superuser = user.is_staff = True
        user.save()
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def make_dead_letters(count: int, **overrides: Any) -> list[DeadLetter]:
    """Stored dead letters, through the real parser and the real ingest."""
    from dashboard.broker.inbox import InboundMessage
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
