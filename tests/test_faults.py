"""Faults on real parts: the broker restarted, the database away, pages without a broker."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from django.test import Client
from django.urls import reverse

from dashboard.monitor.jobs import broker_sampler
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    ROOT,
    dead_letter_queue_length,
    make_dead_letter,
    need,
    publish_many,
    start_monitor,
    subprocess_env,
    wait_until,
)
from tests.tcpproxy import TcpProxy

OUTAGE_SECONDS = 30


# --- the broker restarted while the monitor runs -----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_broker_restart_mid_ingestion_loses_nothing_and_doubles_nothing(
    broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    total = 10_000
    ids = publish_many(redis_server.url, total)
    monitor, log = start_monitor("--batch-size", "100")
    try:
        wait_until(lambda: DeadLetter.objects.count() >= 1_000, timeout=60)
        # Stopped with batches in the monitor's hands and thousands still queued;
        # the stop saves them and the start reloads them, as a persistent Redis does.
        redis_server.stop()
        assert DeadLetter.objects.count() < total, "ingestion finished before the restart"
        wait_until(lambda: "broker unreachable" in log.read_text(), timeout=30)
        assert monitor.poll() is None, log.read_text()
        redis_server.start()

        wait_until(lambda: DeadLetter.objects.count() >= total, timeout=120, interval=0.5)
        wait_until(lambda: dead_letter_queue_length(broker) == 0, timeout=60)
    finally:
        if redis_server.process is None:
            redis_server.start()
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)
    assert DeadLetter.objects.count() == total
    assert set(DeadLetter.objects.values_list("task_id", flat=True)) == ids


# --- the database unreachable for 30 s ------------------------------------------------


def psql(url: str, statement: str) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A throwaway, migrated database on the PostgreSQL of TEST_POSTGRES_URL.

    Its own database, read with psycopg: the same test whether the suite runs on
    SQLite or PostgreSQL.
    """
    server = os.environ.get("TEST_POSTGRES_URL", "")
    need(bool(server), "TEST_POSTGRES_URL is not set (CI points it at a PostgreSQL)")
    try:
        psql(server, "SELECT 1")
    except Exception as exc:
        need(False, f"no PostgreSQL at TEST_POSTGRES_URL: {exc}")
    name = f"ops_fault_{secrets.token_hex(4)}"
    psql(server, f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    try:
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            cwd=ROOT,
            env=subprocess_env(DATABASE_URL=url),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr
        yield url
    finally:
        # FORCE: a monitor that was killed may have left a connection behind.
        psql(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stored_ids(url: str) -> set[str]:
    return {str(row[0]) for row in psql(url, "SELECT task_id FROM deadletters_deadletter")}


def test_the_database_away_for_30_seconds_pauses_ingestion_and_loses_nothing(
    postgres_database: str, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    parts = urlsplit(postgres_database)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.restore()
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    through_proxy = urlunsplit(parts._replace(netloc=netloc))
    monitor, log = start_monitor(DATABASE_URL=through_proxy)
    try:
        before = publish_many(redis_server.url, 100)
        wait_until(lambda: stored_ids(postgres_database) == before, timeout=60)

        proxy.cut()
        cut_at = time.monotonic()
        during = publish_many(redis_server.url, 1_000)
        wait_until(lambda: "database unreachable" in log.read_text(), timeout=30)
        # For the whole outage: the monitor waits, nothing is stored, and every
        # message is still in the broker (queued, or in the monitor's unacked batch).
        while time.monotonic() - cut_at < OUTAGE_SECONDS:
            assert monitor.poll() is None, log.read_text()[-3000:]
            assert stored_ids(postgres_database) == before
            assert dead_letter_queue_length(broker) == len(during)
            time.sleep(2)

        proxy.restore()
        wait_until(lambda: stored_ids(postgres_database) == before | during, timeout=120)
        wait_until(lambda: dead_letter_queue_length(broker) == 0, timeout=30)
        rows = psql(postgres_database, "SELECT count(*) FROM deadletters_deadletter")
        assert rows == [(len(before) + len(during),)]
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(30)
        proxy.cut()
    assert monitor.returncode == 0, log.read_text()[-3000:]


# --- the web with the broker down ---------------------------------------------------


@pytest.mark.django_db
def test_the_pages_answer_while_the_broker_is_down(
    operator_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    dead_letter = make_dead_letter()
    redis_server.stop()
    try:
        broker_sampler()()  # the monitor finds the broker away
        for url in ("/", reverse("deadletters:list"), dead_letter.get_absolute_url()):
            response = operator_client.get(url)
            assert response.status_code == 200, url
            assert b"Broker unreachable" in response.content, url
        # The web can serve: an orchestrator must not take it away now.
        assert operator_client.get("/readyz").status_code == 200
    finally:
        redis_server.start()
