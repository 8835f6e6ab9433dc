"""The night shift, in a real Chromium: axe-core finds nothing serious on any
page in the light theme or the dark one (from the browser's preference or the
person's), dark is dark, the tab's title and icon say the cluster's state and
follow it, and the dead-letter console works from the keyboard."""

# The fixtures come from test_browser: pytest injects them by these names.
# ruff: noqa: F811

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from dashboard.models import (
    AuditEvent,
    PeriodicEntry,
    QueuePause,
    QueueSnapshot,
    UserPreference,
    WorkerSnapshot,
)
from dashboard.monitor.status import record_failure, record_success
from deadletters.models import BulkAction
from tests.helpers import make_dead_letters, make_user
from tests.outcome_reports import fold, runs
from tests.test_browser import browser, log_in, page  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What the tests fail on; axe's "moderate" and "minor" are for a person to weigh.
SERIOUS = ("serious", "critical")
AXE = Axe()


def axe_problems(page: Any) -> list[str]:
    """Every serious or critical violation on the page: rule, impact, where."""
    violations = AXE.run(page).response["violations"]
    return [
        f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes']][:5]}"
        for v in violations
        if v["impact"] in SERIOUS
    ]


def luminance(css_colour: str) -> float:
    """The relative luminance (0 black, 1 white) of a computed "rgb(r, g, b)"."""
    r, g, b = (int(part) for part in css_colour.split("(")[1].split(")")[0].split(",")[:3])

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def body_luminance(page: Any) -> float:
    return luminance(page.evaluate("getComputedStyle(document.body).backgroundColor"))


@pytest.fixture
def every_page() -> list[str]:
    """A cluster with something on every page (and a state to colour), and the
    paths of the signed-in pages."""
    now = timezone.now()
    record_success("broker")
    record_success("workers")
    QueueSnapshot.objects.create(
        name="default", sampled_at=now, sources=["configured"], depth=12, oldest_age=42.0,
        in_rate=2.0, out_rate=1.0,
    )  # fmt: skip
    QueueSnapshot.objects.create(name="emails", sampled_at=now, sources=["configured"], depth=0)
    QueuePause.objects.create(queue="emails", username="olivia")
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=now, last_seen_at=now, queues=["default"],
        pool="prefork", pool_size=4, concurrency=4,
    )  # fmt: skip
    WorkerSnapshot.objects.create(
        hostname="w2@host", first_seen_at=now, last_seen_at=now - timedelta(minutes=5),
        online=False,
    )  # fmt: skip
    fold(
        runs("demo.tasks.add", succeeded=9, failed={"KeyError": 1}, runtimes=[0.2] * 10,
             waits=[0.1] * 10),
    )  # fmt: skip
    PeriodicEntry.objects.create(name="nightly", task="demo.tasks.add", reported_at=now)
    dead_letter, *_ = make_dead_letters(3, task="demo.tasks.resize_image")
    bulk = BulkAction.objects.create(action="discard", reason="noise", max_id=0, total=0)
    AuditEvent.objects.create(
        username="olivia", action="requeue", target_type="deadletter",
        target_ids=[str(dead_letter.pk)], count=1, reason="fix deployed",
    )  # fmt: skip
    make_user("olivia", group="Operator")
    return [
        reverse("overview"),
        reverse("queues"),
        reverse("queue_detail", args=["default"]),
        reverse("queue_purge", args=["default"]),
        reverse("workers"),
        reverse("worker_detail", args=["w1@host"]),
        reverse("tasks"),
        reverse("task_detail", args=["demo.tasks.add"]),
        reverse("task_lookup", args=[dead_letter.task_id]),
        f"{reverse('task_search')}?q={dead_letter.task_id[:4]}",
        reverse("periodic"),
        reverse("deadletters:list"),
        reverse("deadletters:groups"),
        dead_letter.get_absolute_url(),
        reverse("deadletters:edit", args=[dead_letter.pk]),
        bulk.get_absolute_url(),
        reverse("audit"),
    ]


@pytest.mark.parametrize(
    ("browser_prefers", "stored"),
    [("light", "system"), ("dark", "system"), ("light", "dark")],
    ids=["light", "dark-from-the-browser", "dark-from-the-preference"],
)
def test_axe_finds_nothing_serious_on_any_page(
    page: Any, live_server: Any, every_page: list[str], browser_prefers: str, stored: str
) -> None:
    page.emulate_media(color_scheme=browser_prefers)
    problems: dict[str, list[str]] = {}
    page.goto(f"{live_server.url}{reverse('login')}")
    problems["/login/"] = axe_problems(page)
    log_in(page, live_server.url, "olivia")
    UserPreference.objects.create(user=User.objects.get(username="olivia"), theme=stored)
    dark = browser_prefers == "dark" or stored == "dark"
    for path in every_page:
        page.goto(f"{live_server.url}{path}")
        assert page.get_attribute("html", "data-theme") == stored, path
        assert (body_luminance(page) < 0.05) is dark, path
        problems[path] = axe_problems(page)
    found = {path: p for path, p in problems.items() if p}
    assert found == {}, "\n".join(f"{path}: {p}" for path, ps in found.items() for p in ps)


def test_the_theme_button_goes_round_without_javascript_and_dark_is_dark(
    browser: Any, live_server: Any
) -> None:
    make_user("olivia", group="Viewer")
    context = browser.new_context(java_script_enabled=False, color_scheme="light")
    page = context.new_page()
    try:
        log_in(page, live_server.url, "olivia")
        page.goto(f"{live_server.url}/audit/?username=olivia")
        assert page.get_attribute("html", "data-theme") == "system"
        assert body_luminance(page) > 0.8
        page.emulate_media(color_scheme="dark")
        assert body_luminance(page) < 0.05, "system follows the browser"

        seen = []
        for _ in range(3):
            page.click("form.theme button")
            # Back on the page it was pressed on.
            page.wait_for_url(f"{live_server.url}/audit/?username=olivia")
            seen.append((page.get_attribute("html", "data-theme"), body_luminance(page)))
        (light, light_lum), (dark, dark_lum), (system, _) = seen
        assert (light, dark, system) == ("light", "dark", "system")
        assert light_lum > 0.8, "the stored light theme wins over a dark browser"
        page.emulate_media(color_scheme="light")
        assert UserPreference.objects.get().theme == "system"
        page.click("form.theme button")
        page.click("form.theme button")
        assert page.get_attribute("html", "data-theme") == "dark"
        assert dark_lum < 0.05 and body_luminance(page) < 0.05, "stored dark wins over light"
    finally:
        context.close()


def wait_for_title(page: Any, title: str) -> None:
    """Until a poll brings ``title`` (a function, not a string: the CSP forbids eval)."""
    page.wait_for_function("title => document.title === title", arg=title, timeout=20_000)


def test_the_title_and_icon_say_the_state_and_follow_it_while_the_page_polls(
    page: Any, live_server: Any
) -> None:
    record_success("broker")
    record_success("workers")
    QueueSnapshot.objects.create(name="default", sampled_at=timezone.now(), depth=0)
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=timezone.now(), last_seen_at=timezone.now(),
        queues=["default"],
    )  # fmt: skip
    make_user("olivia", group="Operator")
    log_in(page, live_server.url, "olivia")
    assert page.title() == "(0) Healthy · Celery Ops"
    healthy = page.get_attribute("#favicon", "href")
    assert healthy.endswith("favicon-healthy.svg")
    assert "all online" in page.inner_text("#tile-workers")
    assert page.inner_text("#tile-queues").count("nothing waiting") == 1
    for scheme in ("light", "dark"):  # the healthy and the unknown colours read too
        page.emulate_media(color_scheme=scheme)
        assert axe_problems(page) == [], scheme

    # Failures arrive and a queue is paused: the next poll says so, in the tab too.
    make_dead_letters(3)
    QueuePause.objects.create(queue="default", username="olivia")
    wait_for_title(page, "(3) Degraded · Celery Ops")
    degraded = page.get_attribute("#favicon", "href")
    assert degraded != healthy and degraded.endswith("favicon-degraded.svg")
    assert "3 open in all: needs a look" in page.inner_text("#tile-dead-letters")
    assert "needs a look: 1 paused" in page.inner_text("#tile-queues")

    # Another page that polls keeps its name and follows the state as well.
    page.goto(f"{live_server.url}/queues/")
    assert page.title() == "(3) Degraded · Queues · Celery Ops"
    record_failure("broker", ConnectionError("Error 111 connecting to 127.0.0.1:6379"))
    wait_for_title(page, "(3) Failing · Queues · Celery Ops")
    assert page.get_attribute("#favicon", "href").endswith("favicon-failing.svg")


def test_a_person_without_a_role_learns_nothing_from_the_tab(page: Any, live_server: Any) -> None:
    make_dead_letters(2)
    make_user("nora")
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "nora")
    page.fill("input[name=password]", "correct horse battery staple")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.title() == "Not allowed · Celery Ops"
    assert page.get_attribute("#favicon", "href").endswith("favicon.svg")


def test_the_console_works_from_the_keyboard(page: Any, live_server: Any) -> None:
    make_user("olivia", group="Operator")
    make_dead_letters(4)
    log_in(page, live_server.url, "olivia")
    page.goto(f"{live_server.url}/deadletters/")

    def current() -> int:
        return int(
            page.evaluate(
                "[...document.querySelectorAll('#deadletters tbody tr')]"
                ".findIndex(row => row.classList.contains('current'))"
            )
        )

    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("jk")  # typed into the search, not taken as keys
    # The console's search (the header's task-id box is a q of its own).
    assert page.input_value("form.filters input[name=q]") == "jk"
    assert current() == -1
    page.fill("form.filters input[name=q]", "")
    page.keyboard.press("Escape")  # out of the search

    page.keyboard.press("j")
    page.keyboard.press("j")
    assert current() == 1
    page.keyboard.press("k")
    assert current() == 0
    # The current row's link has the focus, and the focus shows.
    focused = page.evaluate(
        "(() => { const el = document.activeElement;"
        " return [el.closest('tr').classList.contains('current'),"
        " getComputedStyle(el).outlineStyle, getComputedStyle(el).outlineWidth]; })()"
    )
    assert focused == [True, "solid", "3px"]

    page.keyboard.press("x")
    boxes = page.locator("#deadletters tbody input.pick")
    assert boxes.nth(0).is_checked() and not boxes.nth(1).is_checked()
    assert page.inner_text("[data-picked]") == "1"

    page.keyboard.press("?")
    help_ = page.locator("#keys-help")
    help_.wait_for(state="visible")
    assert "j" in help_.inner_text() and "tick" in help_.inner_text()
    assert axe_problems(page) == []
    page.keyboard.press("Escape")
    help_.wait_for(state="hidden")
    page.keyboard.press("x")  # the keys work again once the list is closed
    assert not boxes.nth(0).is_checked()
