"""The broker sampler: which queues it knows, what it stores, and how it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.utils import timezone

from dashboard.models import (
    CollectorStatus,
    QueueHistory,
    QueuePause,
    QueueSnapshot,
    WorkerSnapshot,
)
from dashboard.monitor.jobs import broker_sampler
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import make_dead_letter, publish_raw

pytestmark = pytest.mark.django_db


@pytest.fixture
def tag(broker: redis.Redis) -> Iterator[str]:
    """A prefix for this test's queues, whose keys are deleted afterwards."""
    value = f"qs{uuid.uuid4().hex[:6]}"
    yield value
    keys = [*broker.scan_iter(match=f"*{value}*")]
    if keys:
        broker.delete(*keys)


def test_every_source_of_queue_names_is_used(
    broker: redis.Redis, redis_server: EmbeddedRedis, settings: object, tag: str
) -> None:
    settings.MONITOR_QUEUES = [f"{tag}-configured"]  # type: ignore[attr-defined]
    now = timezone.now()
    WorkerSnapshot.objects.create(
        hostname=f"w@{tag}", first_seen_at=now, last_seen_at=now, queues=[f"{tag}-consumed"]
    )
    make_dead_letter(queue=f"{tag}-failed", failed_at=now.isoformat())
    make_dead_letter(queue=f"{tag}-failed-long-ago", failed_at="2020-01-01T00:00:00+00:00")
    publish_raw(redis_server.url, {"n": 1}, serializer="json", queue=f"{tag}-bound")
    QueuePause.objects.create(queue=f"{tag}-paused")

    broker_sampler()()

    sources = dict(QueueSnapshot.objects.values_list("name", "sources"))
    assert sources[f"{tag}-configured"] == ["configured"]
    assert sources[f"{tag}-consumed"] == ["workers"]
    assert sources[f"{tag}-failed"] == ["dead letters"]
    assert sources[f"{tag}-bound"] == ["broker"]
    assert sources[f"{tag}-paused"] == ["paused"]
    assert "monitor" in sources["deadletters"]  # and "broker" once a dead letter was sent
    assert f"{tag}-failed-long-ago" not in sources
    assert QueueSnapshot.objects.get(name=f"{tag}-bound").depth == 1
    assert QueueSnapshot.objects.get(name=f"{tag}-configured").depth == 0
    assert not [name for name in sources if "pidbox" in name or name.startswith("celeryev")]
    status = CollectorStatus.objects.get(name="broker")
    assert status.last_success_at is not None
    assert status.failing_since is None


def test_history_keeps_the_deepest_sample_of_each_step_and_is_pruned(
    broker: redis.Redis, redis_server: EmbeddedRedis, settings: object, tag: str
) -> None:
    queue = f"{tag}-history"
    settings.MONITOR_QUEUES = [queue]  # type: ignore[attr-defined]
    settings.MONITOR_HISTORY_STEP = 60  # type: ignore[attr-defined]
    settings.MONITOR_HISTORY_HOURS = 1  # type: ignore[attr-defined]
    step = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    sampler = broker_sampler()

    for _ in range(5):
        publish_raw(redis_server.url, {"n": 1}, serializer="json", queue=queue)
    sampler(step + timedelta(seconds=1))
    for _ in range(3):
        broker.rpop(queue)
    sampler(step + timedelta(seconds=30))
    point = QueueHistory.objects.get(queue=queue)
    assert (point.at, point.depth, point.depth_max) == (step, 2, 5)

    sampler(step + timedelta(seconds=61))
    assert QueueHistory.objects.filter(queue=queue).count() == 2
    later = QueueHistory.objects.get(queue=queue, at=step + timedelta(seconds=60))
    assert later.depth_max == 2

    sampler(step + timedelta(hours=1, seconds=90))
    assert list(QueueHistory.objects.filter(queue=queue).values_list("at", flat=True)) == [
        step + timedelta(hours=1, seconds=60)
    ]


def test_a_queue_no_longer_known_is_dropped(
    broker: redis.Redis, settings: object, tag: str
) -> None:
    settings.MONITOR_QUEUES = [f"{tag}-a", f"{tag}-b"]  # type: ignore[attr-defined]
    sampler = broker_sampler()
    sampler()
    settings.MONITOR_QUEUES = [f"{tag}-a"]  # type: ignore[attr-defined]
    sampler()
    names = set(QueueSnapshot.objects.values_list("name", flat=True))
    assert f"{tag}-a" in names
    assert f"{tag}-b" not in names


def test_with_the_broker_down_it_says_since_when_and_keeps_the_last_figures(
    broker: redis.Redis, redis_server: EmbeddedRedis, settings: object, tag: str
) -> None:
    queue = f"{tag}-outage"
    settings.MONITOR_QUEUES = [queue]  # type: ignore[attr-defined]
    publish_raw(redis_server.url, {"n": 1}, serializer="json", queue=queue)
    sampler = broker_sampler()
    sampler()
    redis_server.stop()
    try:
        sampler()
        failing = CollectorStatus.objects.get(name="broker")
        assert failing.failing_since is not None
        assert failing.last_error
        sampler()
        assert CollectorStatus.objects.get(name="broker").failing_since == failing.failing_since
        assert QueueSnapshot.objects.get(name=queue).depth == 1
    finally:
        redis_server.start()
    sampler()
    assert CollectorStatus.objects.get(name="broker").failing_since is None
    assert QueueSnapshot.objects.get(name=queue).depth == 1  # kept across the restart
