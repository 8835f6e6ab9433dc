"""Monitors as replicas: competing consumers on one queue, each failure stored once."""

from __future__ import annotations

import re
import signal

import pytest
import redis
from django.db.models import Count

from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import dead_letter_queue_length, publish_many, start_monitor, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TOTAL = 20_000
STOPPED = re.compile(r"monitor stopped: (\d+) received, (\d+) stored, (\d+) duplicates")


@pytest.mark.slow
def test_two_monitors_ingest_20000_with_none_lost_and_none_doubled(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    # A lease long enough that no live monitor's batch is taken back from it:
    # taking back a dead one's is test_monitor_process's subject, not this one's.
    monitors = [
        start_monitor("--batch-size", "200", DEADLETTERS_LEASE_SECONDS="30") for _ in range(2)
    ]
    try:
        # Published while both run, as failures arrive in production.
        ids = publish_many(redis_server.url, TOTAL)
        wait_until(lambda: DeadLetter.objects.count() >= TOTAL, timeout=300, interval=1)
        # Nothing left waiting, and no batch left in anybody's hands.
        wait_until(lambda: dead_letter_queue_length(broker) == 0, timeout=60)
    finally:
        for process, _ in monitors:
            process.send_signal(signal.SIGTERM)
        for process, _ in monitors:
            process.wait(30)

    assert DeadLetter.objects.count() == TOTAL
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == ids
    doubled = DeadLetter.objects.values("task_id").annotate(n=Count("id")).filter(n__gt=1)
    assert not doubled.exists()

    totals = []
    for process, log in monitors:
        assert process.returncode == 0, log.read_text()[-3000:]
        match = STOPPED.search(log.read_text())
        assert match, log.read_text()[-3000:]
        totals.append(tuple(int(n) for n in match.groups()))
    stored = [total[1] for total in totals]
    # Both took part, and between them they inserted each failure exactly once.
    assert all(n > 0 for n in stored), totals
    assert sum(stored) == TOTAL, totals
