"""The task pages: every task name with its figures over a window, and one task
in detail; full page and htmx fragment, on outcomes stored as the monitor
stores the workers' reports."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.helpers import make_dead_letters
from tests.outcome_reports import fold, runs

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"


def fragment(client: Client, url: str) -> str:
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    text = response.content.decode()
    assert "<html" not in text
    return text


def rows(page: str) -> list[str]:
    """The task names of the table, in its order."""
    body = page.split('<table class="table task-figures"', 1)[1]
    return re.findall(r'<a href="/tasks/[^"]*"><b>([^<]+)</b></a>', body)


def row(page: str, name: str) -> str:
    """The table row of one task."""
    (found,) = [tr for tr in page.split("<tr")[1:] if f"<b>{name}</b>" in tr]
    return found.split("</tr>", 1)[0]


@pytest.fixture
def deploy() -> None:
    """Before a deploy resize_image was fast; in the last ten minutes it is slow
    and fails a fifth of its runs. add is as it was."""
    now = timezone.now()
    fold(
        runs("demo.tasks.add", at=now - timedelta(minutes=2), succeeded=50,
             runtimes=[0.004] * 50, waits=[0.02] * 50),
        runs("demo.tasks.resize_image", at=now - timedelta(minutes=3), succeeded=8,
             failed={"ValueError": 2}, runtimes=[4.0] * 10, waits=[0.3] * 10,
             queue="images"),
        runs("demo.tasks.resize_image", at=now - timedelta(minutes=50), succeeded=40,
             runtimes=[0.2] * 40, waits=[0.3] * 40, queue="images"),
        runs("demo.tasks.sync_inventory", at=now - timedelta(hours=5), succeeded=3),
    )  # fmt: skip


def test_the_list_shows_each_task_with_its_rate_failures_and_percentiles(
    viewer_client: Client, deploy: None
) -> None:
    page = viewer_client.get(reverse("tasks")).content.decode()
    assert "<html" in page
    assert '<a href="/tasks/" aria-current="page">Tasks</a>' in page
    assert rows(page) == ["demo.tasks.add", "demo.tasks.resize_image", "demo.tasks.sync_inventory"]
    add = row(page, "demo.tasks.add")
    assert "/min" in add
    assert "0 %" in add
    assert "2.5 ms" in add  # runtime p50: the middle of the first bucket (0 to 5 ms)
    resize = row(page, "demo.tasks.resize_image")
    assert "4.0 %" in resize and "(2 of 50)" in resize
    # Over the hour the slow runs are the top fifth: p95 is in 2.5 to 5 s.
    assert re.search(r">[34](\.\d+)? s<", resize)
    # The window is kept in the links to each task.
    assert 'href="/tasks/demo.tasks.add/?window=1h"' in page
    sync = row(page, "demo.tasks.sync_inventory")
    assert sync.count("—") == 8, "seen, but nothing in this window"


def test_the_list_fragment_is_the_polled_figures(viewer_client: Client, deploy: None) -> None:
    page = viewer_client.get(reverse("tasks")).content.decode()
    assert (
        'id="task-figures" hx-get="/tasks/" hx-trigger="every 10s" data-poll-while-visible' in page
    )
    figures = fragment(viewer_client, reverse("tasks"))
    assert figures.lstrip().startswith('<div id="task-figures"')
    assert "demo.tasks.resize_image" in figures
    assert 'id="banner" hx-swap-oob="true"' in figures


def test_a_window_is_one_click_away(viewer_client: Client, deploy: None) -> None:
    page = viewer_client.get(reverse("tasks") + "?window=15m").content.decode()
    tab = '<a href="?window=24h" hx-get="?window=24h" hx-target="#task-figures"'
    assert tab in page
    assert 'aria-current="page">15 min</a>' in page
    resize = row(page, "demo.tasks.resize_image")
    assert "20 %" in resize and "(2 of 10)" in resize, "only the runs since the deploy"
    # The day's window reads more rows: it does not poll.
    day = fragment(viewer_client, reverse("tasks") + "?window=24h")
    assert "hx-trigger" not in day.split(">", 1)[0]
    assert "demo.tasks.sync_inventory" in day
    sync = row(day, "demo.tasks.sync_inventory")
    assert "0 %" in sync


def test_sorting_by_runtime_p95_puts_the_task_that_got_slow_first(
    viewer_client: Client, deploy: None
) -> None:
    page = viewer_client.get(reverse("tasks") + "?window=15m&sort=-runtime_p95").content.decode()
    assert rows(page)[0] == "demo.tasks.resize_image"
    # The sort links keep the window.
    assert re.search(r'href="\?[^"]*window=15m[^"]*"', page.split("<thead", 1)[1])
    page = viewer_client.get(reverse("tasks") + "?window=15m&sort=runtime_p95").content.decode()
    assert rows(page)[-1] == "demo.tasks.resize_image"


def test_an_empty_list_says_how_outcomes_arrive(viewer_client: Client) -> None:
    page = viewer_client.get(reverse("tasks")).content.decode()
    assert "No task outcomes reported yet" in page
    assert "deadletters.hook" in page


def test_a_task_page_shows_its_figures_charts_exceptions_and_queues(
    viewer_client: Client, deploy: None
) -> None:
    make_dead_letters(3, task="demo.tasks.resize_image", exception_type="ValueError")
    url = reverse("task_detail", args=["demo.tasks.resize_image"])
    page = viewer_client.get(url + "?window=15m").content.decode()
    assert "<html" in page
    assert '<a href="/tasks/" aria-current="page">Tasks</a>' in page
    assert '<span class="figure">20 %</span>' in page
    assert "8 succeeded, 2 failed in 15 min" in page
    # The rate and runtime charts, two lines each.
    charts = re.findall(r'<svg class="chart (throughput|latency)".*?</svg>', page, re.S)
    assert charts == ["throughput", "latency"]
    assert page.count('<polyline class="s2"') == 2
    exceptions = page.split('id="exceptions"', 1)[1].split("</section>", 1)[0]
    assert "ValueError" in exceptions
    assert "/deadletters/?task=demo.tasks.resize_image&amp;exception=ValueError" in exceptions
    queues = page.split('id="task-queues"', 1)[1].split("</section>", 1)[0]
    assert "images" in queues
    links = page.split('id="task-deadletters"', 1)[1].split("</section>", 1)[0]
    assert 'href="/deadletters/?task=demo.tasks.resize_image"' in links
    assert 'href="/deadletters/groups/?task=demo.tasks.resize_image"' in links
    assert "3 open of 3" in links


def test_a_task_page_fragment_is_its_polled_figures(viewer_client: Client, deploy: None) -> None:
    url = reverse("task_detail", args=["demo.tasks.add"])
    page = viewer_client.get(url).content.decode()
    assert f'id="task-figures" hx-get="{url}" hx-trigger="every 10s"' in page
    figures = fragment(viewer_client, url)
    assert figures.lstrip().startswith('<div id="task-figures"')
    assert "<h1>" not in figures
    assert '<span class="figure">0 %</span>' in figures


def test_a_task_that_ran_before_the_window_still_has_its_page(
    viewer_client: Client, deploy: None
) -> None:
    url = reverse("task_detail", args=["demo.tasks.sync_inventory"])
    page = viewer_client.get(url + "?window=15m").content.decode()
    assert "No runs finished in this window." in page
    assert "No failures since" in page
    page = viewer_client.get(url + "?window=24h").content.decode()
    assert "3 succeeded, 0 failed in 24 h" in page


def test_a_task_no_worker_reported_is_404(viewer_client: Client) -> None:
    response = viewer_client.get(reverse("task_detail", args=["demo.tasks.never"]))
    assert response.status_code == 404


def test_names_with_slashes_and_markup_are_text(viewer_client: Client) -> None:
    name = "team/" + XSS
    fold(runs(name, succeeded=1, failed={XSS: 1}, runtimes=[0.1, 0.1]))
    url = reverse("task_detail", args=[name])
    for page_url in (reverse("tasks"), url):
        response = viewer_client.get(page_url)
        assert response.status_code == 200
        page = response.content.decode()
        assert XSS not in page
        assert "&lt;script&gt;" in page
    assert url.startswith("/tasks/team/")
