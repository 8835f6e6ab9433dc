"""Dead letters through a real RabbitMQ: publisher confirms, prefetch, acks after commit."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from deadletters import hook
from deadletters.models import DeadLetter
from tests.helpers import (
    ROOT,
    ingest,
    make_envelope,
    publish_raw,
    subprocess_env,
    wait_until,
)
from tests.testenv import DATA_DIR

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def queue_name(
    rabbitmq_url: str, settings: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A queue of this test's own, deleted afterwards; the site drains it from RabbitMQ."""
    name = f"deadletters-test-{uuid.uuid4().hex[:8]}"
    # Celery prefers this variable to an app's own broker_url, as on a team's worker.
    monkeypatch.setenv("CELERY_BROKER_URL", rabbitmq_url)
    settings.CELERY_BROKER_URL = rabbitmq_url  # type: ignore[attr-defined]
    settings.DEADLETTERS_QUEUE = name  # type: ignore[attr-defined]
    yield name
    with Connection(rabbitmq_url) as conn:
        channel: Any = conn.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


def team_app(url: str, queue: str) -> Celery:
    app = Celery("team", broker=url)
    app.conf.deadletters_queue = queue
    return app


@pytest.mark.django_db
def test_envelopes_published_with_confirms_are_ingested_once(
    rabbitmq_url: str, queue_name: str
) -> None:
    app = team_app(rabbitmq_url, queue_name)
    publisher = hook._Publisher()
    first, second = make_envelope(), make_envelope()
    for envelope in (first, second, first):  # the third is a redelivery of the first
        publisher.publish(app, envelope)
    publish_raw(
        rabbitmq_url,
        b"\x80\x04pickled",
        content_type="application/x-python-serialize",
        content_encoding="binary",
        queue=queue_name,
    )
    assert ingest() == 3
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) >= {first["id"], second["id"]}
    quarantined = DeadLetter.objects.get(kind="quarantined")
    assert bytes(quarantined.raw_body or b"") == b"\x80\x04pickled"
    with Connection(rabbitmq_url) as conn:
        channel: Any = conn.channel()  # py-amqp's channel; kombu's stubs know less
        _, ready, _ = channel.queue_declare(queue_name, passive=True)
    assert ready == 0


@pytest.mark.django_db(transaction=True)
def test_kill_9_of_the_monitor_loses_and_doubles_nothing(
    rabbitmq_url: str, queue_name: str
) -> None:
    app = team_app(rabbitmq_url, queue_name)
    publisher = hook._Publisher()
    ids = set()
    for _ in range(3_000):
        envelope = make_envelope()
        ids.add(envelope["id"])
        publisher.publish(app, envelope)

    env = subprocess_env(CELERY_BROKER_URL=rabbitmq_url, DEADLETTERS_QUEUE=queue_name)

    def monitor() -> subprocess.Popen[bytes]:
        log = (DATA_DIR / f"monitor-amqp-{time.monotonic_ns()}.log").open("wb")
        return subprocess.Popen(
            [sys.executable, "manage.py", "monitor", "--batch-size", "50"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    first = monitor()
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 300, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert DeadLetter.objects.count() < 3_000, "the monitor finished before it could be killed"

    second = monitor()
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 3_000, timeout=120, interval=0.5)
        time.sleep(1)
    finally:
        second.terminate()
        assert second.wait(15) == 0
    assert DeadLetter.objects.count() == 3_000
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == ids
