"""/readyz for orchestrators: this web process can serve (the database is
reachable and migrated); never the broker or the monitor. No login."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import Client

from dashboard import health
from demo.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.django_db


def readyz(client: Client) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    return response.status_code, response.json()


def test_ready_with_a_reachable_migrated_database(client: Client) -> None:
    status, body = readyz(client)
    assert status == 200, body
    assert body == {
        "status": "ok",
        "failing": [],
        "checks": {"database": {"ok": True}, "migrations": {"ok": True}},
    }


def test_ready_on_a_cold_start_before_any_monitor_reported(client: Client) -> None:
    """Nothing sampled yet: the pages can still be served, and say so themselves."""
    assert readyz(client)[0] == 200


def test_ready_while_the_broker_is_down(
    client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    redis_server.stop()
    try:
        status, body = readyz(client)
    finally:
        redis_server.start()
    assert status == 200, body
    assert "broker" not in body["checks"]


def test_unready_while_a_migration_is_pending(client: Client, monkeypatch: Any) -> None:
    monkeypatch.setattr(health, "_migrated", False)
    # The newest one: with it unapplied, the app is not at its leaf.
    [(_, newest)] = [
        n for n in MigrationLoader(connection).graph.leaf_nodes() if n[0] == "dashboard"
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'dashboard' AND name = %s", [newest]
        )
    status, body = readyz(client)
    assert status == 503
    assert body["failing"] == ["migrations"]
    assert body["checks"]["migrations"]["pending"] == 1


def test_readyz_and_healthz_need_no_login_and_no_https(client: Client, settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in {200, 503}
    assert client.get("/deadletters/").status_code == 301  # pages do go to HTTPS
