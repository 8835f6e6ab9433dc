"""The pages in a real headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.utils import timezone

from dashboard.models import QueueSnapshot
from dashboard.periodic import reports
from deadletters.models import BulkAction, DeadLetter
from tests.beat_reports import beat_report, message
from tests.helpers import (
    ROOT,
    make_dead_letter,
    make_dead_letters,
    make_user,
    need,
    subprocess_env,
)
from tests.outcome_reports import fold, runs
from tests.testenv import DATA_DIR

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


# Other modules import these fixtures (``from tests.test_browser import browser,
# page``), and pytest registers them there again, as fixtures of their own. One
# Chromium serves them all: Playwright's sync API runs one event loop a thread,
# and a second one started beside it fails.
_LAUNCHED: list[Any] = []


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if _LAUNCHED:
        yield _LAUNCHED[0]  # the first module's, closed after this one's teardown
        return
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    need(executable is not None, "Chromium is not installed here (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the
    # tests make around it are ordinary synchronous ones.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        _LAUNCHED.append(browser)
        try:
            yield browser
        finally:
            _LAUNCHED.clear()
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.dialogs = dialogs
    yield page
    context.close()


def log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")


def test_an_operator_finds_a_dead_letter_and_requeues_it(
    page: Any, live_server: Any, broker: redis.Redis
) -> None:
    make_user("olivia", group="Operator")
    dead_letter = make_dead_letter(queue="requeue-target", task="demo.tasks.resize_image")
    log_in(page, live_server.url, "olivia")

    page.click("text=Dead letters")
    page.click("text=demo.tasks.resize_image")
    page.wait_for_url(f"{live_server.url}{dead_letter.get_absolute_url()}")
    page.click("button:has-text('Requeue')")

    page.wait_for_selector("#actions :text('Requeued as')")
    assert page.locator("button:has-text('Requeue')").count() == 0
    assert "<html" not in page.inner_html("#actions")  # the fragment was swapped in place
    dead_letter.refresh_from_db()
    assert dead_letter.state == DeadLetter.State.REQUEUED
    assert page.locator(f"text={dead_letter.requeue_task_id}").count() >= 1
    assert broker.llen("requeue-target") == 1


def test_a_second_operator_is_told_who_got_there_first(
    page: Any, live_server: Any, broker: redis.Redis
) -> None:
    make_user("olivia", group="Operator")
    dead_letter = make_dead_letter(queue="requeue-target")
    log_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}{dead_letter.get_absolute_url()}")
    # Somebody else discards it while this page is open.
    DeadLetter.objects.filter(pk=dead_letter.pk).update(state="discarded")
    page.click("button:has-text('Requeue')")
    page.wait_for_selector("#actions [role=alert]")
    assert "Already discarded" in page.inner_text("#actions [role=alert]")
    assert broker.llen("requeue-target") == 0


def test_a_viewer_sees_no_buttons(page: Any, live_server: Any) -> None:
    make_user("victor", group="Viewer")
    dead_letter = make_dead_letter()
    log_in(page, live_server.url, "victor")
    page.goto(f"{live_server.url}{dead_letter.get_absolute_url()}")
    assert page.locator("#actions").count() == 1
    assert page.locator("#actions button").count() == 0


def test_hostile_text_never_runs(page: Any, live_server: Any) -> None:
    make_user("olivia", group="Operator")
    dead_letter = make_dead_letter(
        args=[XSS],
        kwargs={"note": XSS},
        exception_message=XSS,
        traceback=XSS,
        task="demo.tasks.x" + XSS,
    )
    log_in(page, live_server.url, "olivia")
    for path in ("/deadletters/", dead_letter.get_absolute_url()):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
    assert page.dialogs == []
    assert page.locator("img[src=x]").count() == 0
    assert "<script>alert(1)</script>" in page.inner_text("main")


@pytest.fixture
def monitor_process() -> Iterator[subprocess.Popen[bytes]]:
    log = (DATA_DIR / f"monitor-browser-{time.monotonic_ns()}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "monitor"],
        cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    yield process
    process.terminate()
    process.wait(15)


def test_an_operator_filters_then_requeues_everything_matching_and_watches_it_finish(
    page: Any, live_server: Any, broker: redis.Redis, monitor_process: Any
) -> None:
    make_user("olivia", group="Operator")
    make_dead_letters(30, queue="requeue-target", task="demo.tasks.sync_inventory")
    make_dead_letters(5, queue="default")
    log_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}/deadletters/")
    page.fill("input[name=queue]", "requeue-target")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**queue=requeue-target**")
    assert page.inner_text("[data-count]") == "30"

    page.check("input[name=scope][value=filter]")
    page.fill("input[name=reason]", "inventory API is back")
    page.click("#bulk button[value=requeue]")
    page.wait_for_url("**/deadletters/bulk/*/")
    page.wait_for_selector("[data-state]:text('Done')", timeout=60_000)
    assert page.inner_text("[data-done]") == "30"
    assert page.get_attribute("progress", "value") == "30"
    assert broker.llen("requeue-target") == 30
    assert DeadLetter.objects.filter(queue="default", state="open").count() == 5


def test_shift_click_ticks_a_range_and_only_those_are_discarded(
    page: Any, live_server: Any
) -> None:
    make_user("olivia", group="Operator")
    make_dead_letters(6)
    log_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}/deadletters/")
    boxes = page.locator("input.pick")
    boxes.nth(1).click()
    boxes.nth(4).click(modifiers=["Shift"])
    assert page.inner_text("[data-picked]") == "4"
    ticked = [int(boxes.nth(i).get_attribute("value")) for i in range(1, 5)]
    page.fill("input[name=reason]", "duplicates")
    page.click("#bulk button[value=discard]")
    page.wait_for_url("**/deadletters/bulk/*/")
    action = BulkAction.objects.get()
    assert sorted(action.selected_ids or []) == sorted(ticked)
    assert action.total == 4


def test_a_viewer_sees_no_bulk_controls(page: Any, live_server: Any) -> None:
    make_user("victor", group="Viewer")
    make_dead_letters(3)
    log_in(page, live_server.url, "victor")
    page.goto(f"{live_server.url}/deadletters/")
    assert page.locator("#bulk").count() == 0
    page.goto(f"{live_server.url}/deadletters/groups/")
    assert page.locator("button:has-text('Requeue all')").count() == 0


def test_the_pages_run_under_the_content_security_policy(
    page: Any, live_server: Any, broker: redis.Redis
) -> None:
    """No violation anywhere a person goes, including a requeue through htmx."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    # The browser's own report of each blocked script, style or connection.
    page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    make_user("olivia", group="Operator")
    dead_letter = make_dead_letter(queue="requeue-target")
    fold(runs("demo.tasks.add", succeeded=9, failed={"KeyError": 1}, runtimes=[0.2] * 10))
    QueueSnapshot.objects.create(name="requeue-target", sampled_at=timezone.now(), depth=1)
    log_in(page, live_server.url, "olivia")
    violations: list[str] = []
    pages = (
        "/",
        "/queues/requeue-target/",
        "/tasks/",
        "/tasks/demo.tasks.add/",
        "/periodic/",
        "/deadletters/",
        dead_letter.get_absolute_url(),
    )
    for path in pages:
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        violations += page.evaluate("window.__violations")
    assert page.evaluate("typeof htmx") == "object"  # the script did load and run
    page.click("button:has-text('Requeue')")
    page.wait_for_selector("#actions :text('Requeued as')")
    violations += page.evaluate("window.__violations")
    assert violations == []
    assert [text for text in console if "Content Security Policy" in text] == []


def test_an_operator_sees_two_beats_and_runs_an_entry_now(
    page: Any, live_server: Any, broker: redis.Redis
) -> None:
    now = time.time()
    reports.fold([message(beat_report("old", 8, now - 3600, [now - 1]))])
    reports.fold([message(beat_report("young", 1, now - 30, [now]))])
    make_user("olivia", group="Operator")
    log_in(page, live_server.url, "olivia")
    page.click("nav >> text=Periodic")
    banner = page.locator(".duplicate-beat")
    assert banner.inner_text().startswith(
        "2 beat processes are sending acme-tick: host-a pid 108, host-a pid 101."
    )
    page.click("button:has-text('Run now')")
    page.wait_for_selector("#control-result :text('Sent acme.tick for acme-tick now')")
    assert broker.llen("celery") == 1
    broker.delete("celery")


def test_a_marked_poll_pauses_while_the_tab_is_hidden(page: Any, live_server: Any) -> None:
    """The CSP-safe form of hx-trigger="every 5s [document.visibilityState === 'visible']"."""
    make_user("olivia", group="Operator")
    log_in(page, live_server.url, "olivia")
    polls: list[str] = []

    def on_request(request: Any) -> None:
        if "/healthz" in request.url:
            polls.append(request.url)

    def wait_for_polls(count: int) -> None:
        # Playwright delivers events only inside its own calls: wait with it.
        for _ in range(100):
            if len(polls) >= count:
                return
            page.wait_for_timeout(100)
        raise AssertionError(f"{len(polls)} polls, not {count}")

    def show(state: str) -> None:
        page.evaluate(
            "state => Object.defineProperty("
            "document, 'visibilityState', {get: () => state, configurable: true})",
            state,
        )

    page.on("request", on_request)
    page.evaluate(
        """() => {
        const div = document.createElement('div');
        div.setAttribute('hx-get', '/healthz');
        div.setAttribute('hx-trigger', 'every 100ms');
        div.setAttribute('hx-swap', 'none');
        div.setAttribute('data-poll-while-visible', '');
        document.body.appendChild(div);
        htmx.process(div);
    }"""
    )
    wait_for_polls(3)
    show("hidden")
    page.wait_for_timeout(300)  # a request already under way may still finish
    paused_at = len(polls)
    page.wait_for_timeout(1000)  # ten turns of the poll
    assert len(polls) == paused_at
    show("visible")
    wait_for_polls(paused_at + 3)


def test_the_filter_bar_fits_a_1280_pixel_screen(page: Any, live_server: Any) -> None:
    make_user("olivia", group="Operator")
    task = "demo.tasks.removed_in_last_deploy_of_the_billing_service"
    make_dead_letter(task=task)
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_server.url, "olivia")
    # Empty fields, as the form sends them: the URL that stays has only the task.
    page.goto(f"{live_server.url}/deadletters/?q=&task={task}&until=")
    assert page.url == f"{live_server.url}/deadletters/?task={task}"
    since = page.locator("input[name=since]").bounding_box()
    until = page.locator("input[name=until]").bounding_box()
    assert until["y"] == since["y"], "until on a line of its own"
    field = page.locator("input[name=task]")
    assert field.input_value() == task
    assert field.evaluate("e => e.scrollWidth <= e.clientWidth"), "the task name is cut off"
    assert page.locator("form.filters").evaluate("f => f.scrollWidth <= f.clientWidth")
