"""The monitor process samples queues and workers, and the pages live through an outage."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.models import CollectorStatus, QueueSnapshot, WorkerSnapshot
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import (
    ROOT,
    SESSION_WORKER,
    WorkerProcess,
    make_user,
    subprocess_env,
    wait_until,
)
from tests.testenv import DATA_DIR

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = ("/", "/queues/", "/workers/", "/deadletters/")


def start_monitor(**env: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = DATA_DIR / f"monitor-sampling-{time.monotonic_ns()}.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT,
        env=subprocess_env(MONITOR_BROKER_INTERVAL="0.5", MONITOR_WORKERS_INTERVAL="1", **env),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return process, log


def status(name: str) -> CollectorStatus | None:
    return CollectorStatus.objects.filter(name=name).first()


def test_the_pages_say_the_broker_is_away_and_recover_with_it(
    broker: redis.Redis, redis_server: EmbeddedRedis, worker: WorkerProcess
) -> None:
    client = Client()
    client.force_login(make_user("olivia", group="Operator"))
    monitor, log = start_monitor()
    try:
        wait_until(lambda: QueueSnapshot.objects.filter(name="reports").exists(), timeout=30)
        wait_until(
            lambda: WorkerSnapshot.objects.filter(hostname=SESSION_WORKER, online=True).exists(),
            timeout=30,
        )
        page = client.get(reverse("queues")).content.decode()
        assert "reports" in page
        assert "Broker unreachable" not in page

        redis_server.stop()
        try:
            failing = wait_until(
                lambda: CollectorStatus.objects.filter(
                    name="broker", failing_since__isnull=False
                ).first(),
                timeout=30,
            )
            wait_until(lambda: (s := status("workers")) is not None and s.is_failing, timeout=30)
            stamp = timezone.localtime(failing.failing_since).strftime("%H:%M")
            for url in PAGES:
                response = client.get(url)
                assert response.status_code == 200, url
                text = response.content.decode()
                assert re.search(rf"Broker unreachable since <time[^>]*>{stamp}</time>", text)
            fragment = client.get(reverse("queues"), HTTP_HX_REQUEST="true").content.decode()
            assert "Broker unreachable since" in fragment
            assert "reports" in fragment, "the last figures stay on the page"
            assert monitor.poll() is None, log.read_text()
        finally:
            restarted = timezone.now()
            redis_server.start()

        wait_until(lambda: not status("broker").is_failing, timeout=60)  # type: ignore[union-attr]
        wait_until(
            lambda: (
                (s := status("workers")) is not None
                and not s.is_failing
                and s.last_success_at is not None
                and s.last_success_at > restarted
            ),
            timeout=60,
        )
        for url in PAGES:
            response = client.get(url)
            assert response.status_code == 200
            assert "Broker unreachable" not in response.content.decode()
    finally:
        monitor.terminate()
        code = monitor.wait(30)
    text = log.read_text()
    assert code == 0, text
    assert "broker sampling failed" in text
    assert "Traceback" not in text, "outages are expected, not crashes"
