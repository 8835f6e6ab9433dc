"""The monitor as a real process: killed, stopped, and cut off from its broker."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    dead_letter_queue_length,
    make_envelope,
    publish_envelope,
    publish_many,
    start_monitor,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def test_kill_9_while_ingesting_then_restart_leaves_every_row_exactly_once(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    ids = publish_many(redis_server.url, 10_000)
    monitor, _ = start_monitor("--batch-size", "100")
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 1_000, timeout=60)
    finally:
        monitor.send_signal(signal.SIGKILL)
        monitor.wait()
    stored_at_kill = DeadLetter.objects.count()
    assert stored_at_kill < 10_000, "the monitor finished before it could be killed"

    monitor, _log = start_monitor("--batch-size", "100")
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 10_000, timeout=120, interval=0.5)
        wait_until(lambda: dead_letter_queue_length(broker) == 0, timeout=30)
        time.sleep(1)  # a late duplicate would land now
    finally:
        monitor.terminate()
        monitor.wait(15)
    assert DeadLetter.objects.count() == 10_000
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == ids


def test_sigterm_finishes_and_exits_cleanly(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    monitor, log = start_monitor()
    envelope = make_envelope()
    publish_envelope(redis_server.url, envelope)
    wait_until(lambda: DeadLetter.objects.filter(task_id=envelope["id"]).exists(), timeout=30)
    started = time.monotonic()
    monitor.send_signal(signal.SIGTERM)
    assert monitor.wait(15) == 0
    assert time.monotonic() - started < 10
    assert "monitor stopped: 1 received, 1 stored" in log.read_text()


def test_it_reconnects_when_the_broker_comes_back(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    monitor, log = start_monitor()
    try:
        first = make_envelope()
        publish_envelope(redis_server.url, first)
        wait_until(lambda: DeadLetter.objects.filter(task_id=first["id"]).exists(), timeout=30)

        redis_server.stop()
        time.sleep(3)  # the monitor notices, and keeps trying
        assert monitor.poll() is None, log.read_text()
        redis_server.start()

        second = make_envelope()
        publish_envelope(redis_server.url, second)
        wait_until(lambda: DeadLetter.objects.filter(task_id=second["id"]).exists(), timeout=60)
    finally:
        monitor.terminate()
        monitor.wait(15)
    assert "broker unreachable" in log.read_text()


def test_the_ingest_collector_says_since_when_the_broker_is_away(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    from dashboard.models import CollectorStatus

    monitor, _ = start_monitor()
    try:
        wait_until(lambda: CollectorStatus.objects.filter(name="ingest").exists(), timeout=30)
        assert CollectorStatus.objects.get(name="ingest").failing_since is None
        redis_server.stop()
        try:
            status = wait_until(
                lambda: CollectorStatus.objects.filter(
                    name="ingest", failing_since__isnull=False
                ).first(),
                timeout=30,
            )
            first_failure = status.failing_since
            time.sleep(2)  # more failed attempts must not move "since"
            status.refresh_from_db()
            assert status.failing_since == first_failure
            assert status.last_error
        finally:
            redis_server.start()
        wait_until(
            lambda: CollectorStatus.objects.filter(name="ingest", failing_since=None).exists(),
            timeout=60,
        )
    finally:
        monitor.terminate()
        monitor.wait(15)
