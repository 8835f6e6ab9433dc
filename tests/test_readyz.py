"""/readyz for orchestrators: database, broker, and fresh snapshots; no login."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis
from django.test import Client
from django.utils import timezone

from dashboard.embedded_redis import EmbeddedRedis
from dashboard.models import CollectorStatus
from dashboard.status import record_failure, record_success

pytestmark = pytest.mark.django_db


def readyz(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def age(name: str, seconds: float) -> None:
    CollectorStatus.objects.filter(name=name).update(
        last_success_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_ready_when_everything_answers_and_is_fresh(client: Client, broker: redis.Redis) -> None:
    record_success("ingest")
    record_success("workers")
    status, body = readyz(client)
    assert status == 200, body
    assert body["status"] == "ok"
    assert body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "snapshots"}
    assert set(body["checks"]["snapshots"]["collectors"]) == {"ingest", "workers"}


def test_a_stale_collector_is_named(client: Client, broker: redis.Redis, settings: Any) -> None:
    settings.READYZ_MAX_AGE_SECONDS = 60
    record_success("ingest")
    record_success("broker")
    age("broker", 61)
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["snapshots"]
    collectors = body["checks"]["snapshots"]["collectors"]
    assert collectors["broker"]["ok"] is False
    assert collectors["broker"]["max_age_seconds"] == 60
    assert collectors["ingest"]["ok"] is True


def test_each_collector_may_have_its_own_threshold(
    client: Client, broker: redis.Redis, settings: Any
) -> None:
    settings.READYZ_MAX_AGE_SECONDS = 60
    settings.READYZ_MAX_AGE_BY_COLLECTOR = {"workers": 300}
    record_success("workers")
    age("workers", 200)
    assert readyz(client)[0] == 200
    age("workers", 301)
    assert readyz(client)[0] == 503


def test_a_collector_that_never_succeeded_is_not_ready(client: Client, broker: redis.Redis) -> None:
    record_success("ingest")
    record_failure("workers", "nobody answered")
    status, body = readyz(client)
    assert status == 503
    assert body["checks"]["snapshots"]["collectors"]["workers"]["age_seconds"] is None


def test_no_collector_at_all_means_no_monitor_has_run(client: Client, broker: redis.Redis) -> None:
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["snapshots"]
    assert "monitor" in body["checks"]["snapshots"]["reason"]


def test_the_broker_away_is_named_and_nothing_leaks(
    client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    record_success("ingest")
    redis_server.stop()
    try:
        status, body = readyz(client)
    finally:
        redis_server.start()
    assert status == 503
    assert body["failing"] == ["broker"]
    assert body["checks"]["broker"]["error"]
    assert str(redis_server.port) not in str(body)  # no addresses for anonymous callers
    assert readyz(client)[0] == 200


def test_readyz_and_healthz_need_no_login_and_no_https(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in {200, 503}
    assert client.get("/deadletters/").status_code == 301  # pages do go to HTTPS
