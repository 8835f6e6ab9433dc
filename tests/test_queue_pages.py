"""The overview, queue and worker pages: stored snapshots only, full page and fragment."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.models import (
    CollectorStatus,
    QueueHistory,
    QueuePause,
    QueueSnapshot,
    WorkerSnapshot,
)
from dashboard.monitor.status import record_failure, record_success
from tests.helpers import make_dead_letter

pytestmark = pytest.mark.django_db

XSS = "<script>alert(1)</script>"
# The CSP forbids eval: poll.js pauses polling of data-poll-while-visible elements.
POLL = 'hx-trigger="every 5s" data-poll-while-visible'


def queue(name: str, **fields: object) -> QueueSnapshot:
    defaults: dict[str, object] = {"sampled_at": timezone.now(), "sources": ["configured"]}
    defaults.update(fields)
    return QueueSnapshot.objects.create(name=name, **defaults)


def worker(hostname: str, **fields: object) -> WorkerSnapshot:
    now = timezone.now()
    defaults: dict[str, object] = {
        "first_seen_at": now,
        "last_seen_at": now,
        "pool": "prefork",
        "pool_size": 4,
        "concurrency": 4,
        "queues": ["default"],
        "sw_ver": "5.7.0",
        "loadavg": [0.5, 0.25, 0.1],
        "uptime": 3700,
        "processed": 1234,
    }
    defaults.update(fields)
    return WorkerSnapshot.objects.create(hostname=hostname, **defaults)


def fragment(client: Client, url: str) -> str:
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    text = response.content.decode()
    assert "<html" not in text
    return text


def test_the_overview_shows_backlog_latency_workers_and_failures(operator_client: Client) -> None:
    queue("default", depth=40, oldest_age=190.0)
    queue("emails", depth=2, oldest_age=5.0)
    queue("deadletters", depth=1000, oldest_age=9999.0)  # the monitor's, not a backlog
    worker("a@h")
    worker("b@h", online=False, last_seen_at=timezone.now() - timedelta(hours=2))
    worker("c@h", online=False, last_seen_at=timezone.now() - timedelta(days=2))
    now = timezone.now().isoformat()
    for _ in range(3):
        make_dead_letter(task="demo.tasks.top", exception_type="KeyError", failed_at=now)
    make_dead_letter(task="demo.tasks.other", failed_at=now)

    page = operator_client.get("/").content.decode()
    assert '<span class="figure">42</span>' in page
    assert "oldest: 3 min in default" in page
    assert '<span class="figure">1 / 2</span>' in page
    assert '<span class="figure">4</span>' in page
    assert "most frequent: demo.tasks.top KeyError (3 this hour)" in page
    for name in ("queues", "workers"):
        assert f'href="{reverse(name)}"' in page
    assert 'href="/deadletters/?state=open"' in page


def test_the_overview_polls_only_its_tiles_while_visible(operator_client: Client) -> None:
    page = operator_client.get("/").content.decode()
    assert f'id="tiles" hx-get="/" {POLL}' in page
    tiles = fragment(operator_client, "/")
    assert tiles.lstrip().startswith('<div class="tiles" id="tiles"')
    assert 'id="banner" hx-swap-oob="true"' in tiles


def test_the_queues_table_shows_depth_age_consumers_and_warnings(
    operator_client: Client,
) -> None:
    queue("default", depth=12, ready=10, unacked=2, oldest_age=75.0, in_rate=3.0, out_rate=1.5)
    queue("stuck", depth=7, oldest_age=None)
    queue("empty", depth=0)
    queue("deadletters", depth=3, sources=["monitor"])
    queue("held", depth=5)
    QueuePause.objects.create(queue="held")
    worker("a@h", queues=["default", "empty"])
    page = operator_client.get(reverse("queues")).content.decode()
    found = re.findall(r"<tr([^>]*)>\s*<td\s*><a [^>]*><b>([^<]+)</b>(.*?)</tr>", page, re.S)
    rows = {name: cells for _, name, cells in found}
    warned = {name for attrs, name, _ in found if "warn" in attrs}
    assert warned == {"stuck"}
    assert "1 min" in rows["default"]
    assert "10 / 2" in rows["default"]
    assert "3.0/s / 1.5/s" in rows["default"]
    assert "1 worker" in rows["default"]
    assert "no consumer" not in rows["default"]
    assert "unknown" in rows["stuck"]
    assert "no consumer" in rows["stuck"]
    assert "no consumer" not in rows["empty"]
    assert "no consumer" not in rows["deadletters"], "the monitor drains it"
    assert "no consumer" not in rows["held"], "paused on purpose"
    assert "paused" in rows["held"]
    assert "the monitor" in rows["deadletters"]


def test_the_depth_chart_is_inline_svg_of_the_last_hour(operator_client: Client) -> None:
    queue("default", depth=4)
    now = timezone.now()
    for minutes, depth in ((50, 10), (30, 20), (90, 99)):
        QueueHistory.objects.create(
            queue="default", at=now - timedelta(minutes=minutes), depth=depth, depth_max=depth
        )
    page = operator_client.get(reverse("queues")).content.decode()
    (svg,) = re.findall(r"<svg class=\"chart\".*?</svg>", page, re.S)
    assert "peak 20" in svg, "the point older than an hour is not drawn"
    assert len(re.search(r'points="([^"]+)"', svg).group(1).split()) == 3  # type: ignore[union-attr]
    assert "<script" not in page.split("<main>")[1]


def test_the_queues_fragment_is_the_polled_table(operator_client: Client) -> None:
    queue("default", depth=1)
    page = operator_client.get(reverse("queues")).content.decode()
    assert f'id="queue-table" hx-get="/queues/?" {POLL}' in page
    table = fragment(operator_client, reverse("queues"))
    assert table.lstrip().startswith('<div id="queue-table"')
    assert "default" in table


def test_each_page_says_how_old_its_data_is(operator_client: Client) -> None:
    page = operator_client.get(reverse("queues")).content.decode()
    assert "Not sampled yet" in page
    record_success("broker")
    record_success("workers")
    # Sampled a moment ago: "just now", not "0 s ago".
    assert re.search(
        r"Sampled <time[^>]*>just now<", operator_client.get(reverse("queues")).content.decode()
    )
    assert re.search(
        r"Sampled <time[^>]*>just now<", operator_client.get(reverse("workers")).content.decode()
    )
    CollectorStatus.objects.filter(name="broker").update(
        last_success_at=timezone.now() - timedelta(minutes=5)
    )
    assert (
        "is <code>manage.py monitor</code> running?"
        in operator_client.get(reverse("queues")).content.decode()
    )


def test_operators_get_queue_controls_viewers_do_not(
    operator_client: Client, viewer_client: Client
) -> None:
    queue("default", depth=1)
    queue("held", depth=1)
    QueuePause.objects.create(queue="held", username="olivia")
    page = operator_client.get(reverse("queues")).content.decode()
    assert "Pause</button>" in page
    assert "Resume</button>" in page
    assert reverse("queue_purge", args=["default"]) in page
    assert "paused" in page
    page = viewer_client.get(reverse("queues")).content.decode()
    assert "Pause</button>" not in page
    assert "Resume</button>" not in page
    assert "Purge" not in page
    assert "paused" in page


def test_the_workers_table_and_its_fragment(operator_client: Client) -> None:
    worker("alive@h", autoscale_min=1, autoscale_max=8)
    worker("gone@h", online=False, last_seen_at=timezone.now() - timedelta(minutes=3))
    page = operator_client.get(reverse("workers")).content.decode()
    # It also refreshes at once when a control on the page (revoke) changed something.
    changed = 'hx-trigger="every 5s, ops-changed from:body" data-poll-while-visible'
    assert f'id="worker-table" hx-get="/workers/?" {changed}' in page
    assert page.index("alive@h") < page.index("gone@h"), "online first"
    assert "prefork, 4 (autoscale 1 to 8)" in page
    assert "0.50 0.25 0.10" in page
    assert "1 h 1 min" in page
    assert "1,234" in page
    assert "offline" in page
    assert "seen 3 min ago" in page
    assert reverse("worker_detail", args=["alive@h"]) in page
    assert "Revoke</button>" in page
    table = fragment(operator_client, reverse("workers"))
    assert table.lstrip().startswith('<div id="worker-table"')
    assert "Revoke</button>" not in table


def test_the_worker_detail_lists_its_tasks_as_last_sampled(
    operator_client: Client, viewer_client: Client
) -> None:
    worker(
        "alive@h",
        active_count=1,
        active=[
            {
                "id": "t-1",
                "name": "demo.tasks.long_running",
                "args": "(7,)",
                "kwargs": "{}",
                "started": 1.0,
                "worker_pid": 42,
            }
        ],
        reserved_count=1,
        reserved=[{"id": "t-2", "name": "demo.tasks.add", "args": "(1, 2)", "kwargs": "{}"}],
        scheduled_count=1,
        scheduled=[
            {
                "id": "t-3",
                "name": "demo.tasks.add",
                "args": XSS,
                "kwargs": "{}",
                "eta": "2030-01-01T00:00:00+00:00",
                "priority": 6,
            }
        ],
        registered=["demo.tasks.add", "demo.tasks.long_running"],
    )
    url = reverse("worker_detail", args=["alive@h"])
    page = operator_client.get(url).content.decode()
    for text in (
        "t-1",
        "(7,)",
        "t-2",
        "t-3",
        "2030-01-01T00:00:00+00:00",
        "demo.tasks.long_running",
    ):
        assert text in page
    assert XSS not in page
    assert "&lt;script&gt;" in page
    assert "Grow pool by 1</button>" in page
    assert "Revoke</button>" in page
    state = fragment(operator_client, url)
    assert state.lstrip().startswith('<div id="worker-state"')
    assert "t-1" in state
    page = viewer_client.get(url).content.decode()
    assert "Grow pool" not in page
    assert "Revoke</button>" not in page


def test_an_autoscaling_worker_offers_autoscale_instead_of_grow(operator_client: Client) -> None:
    worker("scaled@h", autoscale_min=2, autoscale_max=6)
    page = operator_client.get(reverse("worker_detail", args=["scaled@h"])).content.decode()
    assert 'name="max" type="number" min="1" value="6"' in page
    assert "Grow pool" not in page


def test_an_unknown_worker_is_404(operator_client: Client) -> None:
    assert operator_client.get(reverse("worker_detail", args=["nobody@h"])).status_code == 404


def test_while_the_broker_is_unreachable_every_page_says_since_when(
    operator_client: Client,
) -> None:
    record_success("broker")
    record_failure("broker", ConnectionError("Error 111 connecting to 127.0.0.1:6379"))
    since = CollectorStatus.objects.get(name="broker").failing_since
    assert since is not None
    queue("default", depth=3)
    worker("a@h")
    make_dead_letter()
    stamp = timezone.localtime(since).strftime("%H:%M")
    urls = [
        "/",
        reverse("queues"),
        reverse("workers"),
        reverse("worker_detail", args=["a@h"]),
        reverse("deadletters:list"),
        reverse("queue_purge", args=["default"]),
    ]
    for url in urls:
        response = operator_client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        assert re.search(rf"Broker unreachable since <time[^>]*>{stamp}</time>", text), url
        assert "Error 111" in text
    for url in ("/", reverse("queues"), reverse("workers")):
        assert "Broker unreachable since" in fragment(operator_client, url), url

    record_success("broker")
    for url in urls:
        assert "Broker unreachable" not in operator_client.get(url).content.decode()
    assert 'id="banner" hx-swap-oob="true"></div>' in fragment(operator_client, "/")


def test_hostile_queue_and_worker_names_are_text(operator_client: Client) -> None:
    queue("q" + XSS, depth=1)
    worker("w" + XSS, queues=["q" + XSS])
    for url in (reverse("queues"), reverse("workers"), "/"):
        page = operator_client.get(url).content.decode()
        assert XSS not in page


def test_the_navigation_links_queues_and_workers(operator_client: Client) -> None:
    page = operator_client.get(reverse("queues")).content.decode()
    assert '<a href="/queues/" aria-current="page">Queues</a>' in page
    assert '<a href="/workers/" >Workers</a>' in page


def test_the_new_pages_need_a_login(client: Client) -> None:
    worker("a@h")
    queue("default")
    for url in (
        reverse("queues"),
        reverse("workers"),
        reverse("worker_detail", args=["a@h"]),
        reverse("queue_purge", args=["default"]),
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/login/")
