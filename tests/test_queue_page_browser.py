"""A queue's page in a real headless Chromium: reached from the queues table, its
charts drawn, its state in words, and a control that answers in place."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.models import QueueHistory, QueuePause, QueueSnapshot, WorkerSnapshot
from tests.helpers import make_user
from tests.test_browser import browser, log_in, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_an_operator_opens_a_queue_from_the_table_and_resumes_it_there(
    page: Any,  # noqa: F811
    live_server: Any,
) -> None:
    make_user("olivia", group="Operator")
    now = timezone.now()
    QueueSnapshot.objects.create(
        name="images", sampled_at=now, sources=["configured"], depth=42, oldest_age=190.0,
        in_rate=3.0, out_rate=1.0,
    )  # fmt: skip
    for minutes in range(0, 180, 5):
        QueueHistory.objects.create(
            queue="images", at=now - timedelta(minutes=minutes), depth=minutes % 40,
            depth_max=minutes % 40, oldest_age=float(minutes),
        )  # fmt: skip
    WorkerSnapshot.objects.create(
        hostname="a@h", first_seen_at=now, last_seen_at=now, queues=["default"]
    )
    # Nobody consumed it when it was paused: resuming asks no worker, so no broker is needed.
    QueuePause.objects.create(queue="images", username="olivia")
    log_in(page, live_server.url, "olivia")

    page.goto(f"{live_server.url}/queues/")
    page.click("#queues a:has-text('images')")
    page.wait_for_url(f"{live_server.url}/queues/images/")
    assert page.locator("h1").inner_text() == "images"
    # The last hour's depth and age, and the last day's.
    assert page.locator("#queue-depth-hour svg.chart polyline").count() == 1
    assert page.locator("#queue-age-hour svg.chart polyline").count() == 1
    assert page.locator("#queue-day svg.chart polyline").count() == 2
    status = page.inner_text("#queue-status")
    assert "paused by olivia" in status
    assert "growing by 2.0/s" in status

    page.click("#queue-status button:has-text('Resume')")
    page.wait_for_selector("#control-result :text('Resumed images')")
    assert page.url == f"{live_server.url}/queues/images/", "answered in place"
    assert page.locator("#queue-status button:has-text('Pause')").count() == 1
    assert "paused" not in page.inner_text("#queue-status")
    assert "no consumer" in page.inner_text("#queue-status")
    assert not QueuePause.objects.filter(queue="images").exists()
