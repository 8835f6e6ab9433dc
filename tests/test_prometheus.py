"""A real Prometheus server scrapes the running site with the token."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from dashboard.monitor.jobs import broker_sampler
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import wait_until
from tests.prometheus_server import JOB, running_prometheus
from tests.test_metrics import TOKEN, publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_prometheus_sees_the_depth_that_redis_holds(
    live_server: Any, broker: redis.Redis, redis_server: EmbeddedRedis, settings: Any,
    tmp_path: Any,
) -> None:  # fmt: skip
    settings.METRICS_TOKEN = TOKEN
    settings.MONITOR_QUEUES = ["prio-scraped"]
    for priority in (None, 3, 9, 9):
        publish(redis_server.url, "prio-scraped", priority=priority)
    depth = sum(int(broker.llen(key)) for key in broker.scan_iter(match="prio-scraped*")
                if broker.type(key) == b"list")  # fmt: skip
    assert depth == 4
    broker_sampler()()

    with running_prometheus(tmp_path, live_server.url, TOKEN) as prometheus:
        (series,) = wait_until(
            lambda: prometheus.query('celery_queue_length{queue_name="prio-scraped"}'),
            timeout=90, interval=0.5,
        )  # fmt: skip
        assert float(series["value"][1]) == depth
        assert series["metric"]["job"] == JOB
        (up,) = prometheus.query(f'up{{job="{JOB}"}}')
        assert up["value"][1] == "1"
