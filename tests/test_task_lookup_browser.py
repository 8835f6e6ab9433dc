"""Where is task X? from the keyboard, in a real Chromium: "t" on any page
focuses the header's box, Enter opens the task's page, and axe finds nothing
serious on it; a full queue scan asked for with one click, followed by the
page's poll until the monitor's job found the task."""

# The fixtures come from test_browser: pytest injects them by these names.
# ruff: noqa: F811

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dashboard.broker import waiting
from dashboard.monitor.jobs import broker_sampler
from dashboard.tasks import queue_scan
from tests.helpers import make_dead_letter, make_user
from tests.test_accessibility import axe_problems
from tests.test_browser import browser, log_in, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_t_focuses_the_box_and_a_prefix_opens_the_task(page: Any, live_server: Any) -> None:
    dead_letter = make_dead_letter()
    make_user("victor", group="Viewer")
    log_in(page, live_server.url, "victor")
    page.goto(f"{live_server.url}/queues/")
    page.keyboard.press("t")
    assert page.evaluate("document.activeElement.id") == "task-search-q"
    page.keyboard.type(dead_letter.task_id[:8])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live_server.url}/tasks/id/{dead_letter.task_id}/")
    assert "Failed for good (ValueError): open dead letter." in page.inner_text("#summary")
    assert axe_problems(page) == []


def test_the_full_scan_is_asked_for_with_one_click_and_the_page_follows_it(
    page: Any, live_server: Any, broker: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demo import tasks

    queue = f"scan-{uuid.uuid4().hex[:8]}"
    settings.MONITOR_QUEUES = [queue]
    monkeypatch.setattr(waiting, "PER_QUEUE", 10)  # the page reads 10 messages a queue
    task_id = tasks.add.apply_async((1, 1), queue=queue).id
    for n in range(20):
        tasks.add.apply_async((n, n), queue=queue)
    broker_sampler()()
    make_user("olivia", group="Operator")
    log_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}/tasks/id/{task_id}/")
    page.get_by_role("button", name="Search the whole queue in the background").click()
    state = page.locator("#queue-scan-state")
    state.filter(has_text="waiting for the monitor to start it").wait_for()
    queue_scan.run_pending()  # the monitor's turn; the page's poll shows what it found
    state.filter(has_text=f"Found by the full scan in {queue}").wait_for(timeout=15_000)
    assert "0 messages ahead of it" in state.inner_text()
    assert axe_problems(page) == []
    for key in broker.scan_iter(match=f"*{queue}*"):
        broker.delete(key)
