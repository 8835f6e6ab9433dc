"""The overview: healthy, degraded or failing and why, throughput and queue wait
over the last hour, backlogs with a time to drain, workers, and the failure
groups that grew; a cheap fragment for its five-second poll."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from dashboard.models import CollectorStatus, QueuePause, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.status import record_failure, record_success
from dashboard.overview import time_to_drain
from tests.helpers import make_dead_letters
from tests.outcome_reports import fold, runs

pytestmark = pytest.mark.django_db


def queue(name: str, **fields: object) -> QueueSnapshot:
    defaults: dict[str, object] = {"sampled_at": timezone.now(), "sources": ["configured"]}
    defaults.update(fields)
    return QueueSnapshot.objects.create(name=name, **defaults)


def worker(hostname: str, **fields: object) -> WorkerSnapshot:
    now = timezone.now()
    defaults: dict[str, object] = {"first_seen_at": now, "last_seen_at": now, "queues": ["default"]}
    defaults.update(fields)
    return WorkerSnapshot.objects.create(hostname=hostname, **defaults)


@pytest.fixture
def healthy() -> None:
    """A sampled cluster at work: one worker consuming default, tasks succeeding."""
    record_success("broker")
    record_success("workers")
    queue("default", depth=0, in_rate=2.0, out_rate=2.0)
    worker("w1@host")
    fold(runs("demo.tasks.add", succeeded=100, runtimes=[0.01] * 100, waits=[0.05] * 100))


def state(client: Client) -> tuple[str, list[str]]:
    """The state word and the reasons, as the page says them."""
    page = client.get("/").content.decode()
    (level,) = re.findall(r'data-state="(\w+)"', page)
    reasons = re.findall(r'<li class="reason reason-(\w+)"><b>\w+:</b> (?:<a [^>]*>)?([^<]+)', page)
    for reason_level, _ in reasons:
        assert reason_level in ("failing", "degraded")
    return level, [f"{lvl}: {text}" for lvl, text in reasons]


def test_a_cluster_at_work_is_healthy_and_says_so(viewer_client: Client, healthy: None) -> None:
    level, reasons = state(viewer_client)
    assert (level, reasons) == ("healthy", [])
    page = viewer_client.get("/").content.decode()
    assert '<section class="state state-healthy"' in page
    assert "Broker reachable, 1 worker online" in page


def broker_down() -> None:
    record_failure("broker", ConnectionError("Error 111 connecting to 127.0.0.1:6379"))


def no_worker() -> None:
    WorkerSnapshot.objects.update(online=False, last_seen_at=timezone.now() - timedelta(days=2))


def ingest_stuck() -> None:
    record_failure("ingest", "Error 111 connecting to 127.0.0.1:6379")


@pytest.mark.parametrize(
    ("cause", "said"),
    [
        (broker_down, "failing: Broker unreachable since"),
        (no_worker, "failing: No worker online."),
        (ingest_stuck, "failing: Dead-letter ingestion failing since"),
    ],
)
def test_it_is_failing_when_work_cannot_flow_or_failures_are_not_collected(
    viewer_client: Client, healthy: None, cause: Callable[[], None], said: str
) -> None:
    cause()
    level, reasons = state(viewer_client)
    assert level == "failing"
    assert [r for r in reasons if r.startswith(said)], reasons


def failing_task() -> None:
    fold(runs("demo.tasks.resize_image", succeeded=18, failed={"ValueError": 2}))


def queue_without_consumer() -> None:
    queue("emails", depth=40, in_rate=2.0, out_rate=0.0)


def worker_offline() -> None:
    worker("w2@host", online=False, last_seen_at=timezone.now() - timedelta(minutes=3))


def queue_paused() -> None:
    QueuePause.objects.create(queue="default", username="olivia")


@pytest.mark.parametrize(
    ("cause", "said"),
    [
        (
            failing_task,
            "degraded: demo.tasks.resize_image failed 2 of 20 runs (10 %) in the last 10 min.",
        ),
        (
            queue_without_consumer,
            "degraded: Queue emails: 40 waiting, growing 2.0/s, and no worker consumes it.",
        ),
        (worker_offline, "degraded: Worker w2@host offline since"),
        (queue_paused, "degraded: Queue default paused by olivia since"),
    ],
)
def test_it_is_degraded_when_something_needs_a_look(
    viewer_client: Client, healthy: None, cause: Callable[[], None], said: str
) -> None:
    cause()
    level, reasons = state(viewer_client)
    assert level == "degraded"
    assert [r for r in reasons if r.startswith(said)], reasons


def test_a_failure_ratio_of_five_percent_or_one_older_than_ten_minutes_is_healthy(
    viewer_client: Client, healthy: None
) -> None:
    fold(
        runs("demo.tasks.flaky", succeeded=19, failed={"KeyError": 1}),
        runs("demo.tasks.old", at=timezone.now() - timedelta(minutes=25), failed={"E": 9}),
    )
    assert state(viewer_client) == ("healthy", [])


def test_failing_outranks_degraded_and_every_reason_is_said(
    viewer_client: Client, healthy: None
) -> None:
    failing_task()
    queue_paused()
    broker_down()
    level, reasons = state(viewer_client)
    assert level == "failing"
    assert [r.split(":")[0] for r in reasons] == ["failing", "degraded", "degraded"]
    page = viewer_client.get("/").content.decode()
    assert '<section class="state state-failing"' in page
    # The failing task links to its page over the last fifteen minutes.
    assert 'href="/tasks/demo.tasks.resize_image/?window=15m"' in page


def test_an_unsampled_cluster_is_not_called_healthy(viewer_client: Client) -> None:
    level, reasons = state(viewer_client)
    assert level == "degraded"
    assert "degraded: Queues not sampled yet: is manage.py monitor running?" in reasons
    CollectorStatus.objects.create(
        name="broker", last_success_at=timezone.now() - timedelta(minutes=10)
    )
    _, reasons = state(viewer_client)
    assert "degraded: Queues last sampled 10 min ago: is manage.py monitor running?" in reasons


def test_throughput_and_queue_wait_are_charts_of_the_last_hour(
    viewer_client: Client, healthy: None
) -> None:
    now = timezone.now()
    fold(
        runs("demo.tasks.add", at=now - timedelta(minutes=30), succeeded=20, failed={"E": 5},
             waits=[2.0] * 25),
        runs("demo.tasks.add", at=now - timedelta(minutes=90), succeeded=999),
    )  # fmt: skip
    page = viewer_client.get("/").content.decode()
    throughput = page.split('id="throughput"', 1)[1].split("</section>", 1)[0]
    (svg,) = re.findall(r'<svg class="chart throughput".*?</svg>', throughput, re.S)
    succeeded = re.search(r'<polyline class="s1" points="([^"]+)"', svg)
    failed = re.search(r'<polyline class="s2" points="([^"]+)"', svg)
    assert succeeded and failed
    assert len(succeeded.group(1).split()) == len(failed.group(1).split()) == 60
    assert "peak 20" in svg, "the minute ninety minutes ago is not drawn"
    assert '<span class="key s1">succeeded</span>' in throughput
    wait = page.split('id="wait"', 1)[1].split("</section>", 1)[0]
    (svg,) = re.findall(r'<svg class="chart latency".*?</svg>', wait, re.S)
    # One minute measured (the fixture's is the minute under way): p95 of 25
    # waits in the bucket from 1 to 2.5 s, 95 % of the way through.
    assert "peak 2.42" in svg
    # The last ten minutes (and the one under way), as rates: the fixture's 100 runs.
    (rate,) = re.findall(r'<span class="figure">([\d.]+)/min</span>', page)
    assert 9 < float(rate) <= 10
    assert "<script" not in page.split("<main>")[1]


def test_without_outcomes_the_charts_say_how_to_get_them(viewer_client: Client) -> None:
    page = viewer_client.get("/").content.decode()
    assert "No task outcomes reported in the last hour" in page
    assert "No queue wait measured in the last hour" in page


@pytest.mark.parametrize(
    ("depth", "in_rate", "out_rate", "seconds"),
    [
        (0, None, None, 0.0),
        (None, 1.0, 2.0, None),
        (100, None, 2.0, None),
        (100, 1.0, 3.0, 50.0),
        (100, 3.0, 1.0, math.inf),
        (100, 0.0, 0.0, math.inf),
    ],
)
def test_time_to_drain_from_depth_and_rates(
    depth: int | None, in_rate: float | None, out_rate: float | None, seconds: float | None
) -> None:
    assert time_to_drain(depth, in_rate, out_rate) == seconds


def test_queues_with_work_waiting_say_whether_they_grow_and_when_they_drain(
    viewer_client: Client, healthy: None
) -> None:
    queue("draining", depth=600, in_rate=1.0, out_rate=6.0)
    queue("growing", depth=50, in_rate=5.0, out_rate=1.0)
    worker("w3@host", queues=["draining", "growing"])
    queue("deadletters", depth=900, in_rate=9.0, out_rate=0.0)  # the monitor's own
    page = viewer_client.get("/").content.decode()
    backlogs = page.split('id="backlogs"', 1)[1].split("</section>", 1)[0]
    names = re.findall(r'<td><a href="/queues/[^"]+/"><b>([^<]+)</b>', backlogs)
    assert names == ["growing", "draining"], "growing first; empty queues left out"
    growing, draining = backlogs.split("<b>growing</b>")[1], backlogs.split("<b>draining</b>")[1]
    assert 'growing</span>, <span class="warn-text">not at these rates' in growing
    assert "in about 2 min" in draining.split("</tr>")[0]


def test_open_dead_letters_and_the_groups_that_grew(viewer_client: Client, healthy: None) -> None:
    now = timezone.now().isoformat()
    make_dead_letters(3, task="demo.tasks.top", exception_type="KeyError", failed_at=now)
    make_dead_letters(1, task="demo.tasks.other", exception_type="OSError", failed_at=now)
    make_dead_letters(2, failed_at="2020-01-01T00:00:00+00:00")
    page = viewer_client.get("/").content.decode()
    assert '<span class="figure">4</span>' in page
    assert "6 open in all" in page
    grown = page.split('id="grown-groups"', 1)[1].split("</section>", 1)[0]
    assert grown.index("demo.tasks.top") < grown.index("demo.tasks.other")
    assert "+3 this hour, 3 open" in grown
    assert "/deadletters/?signature=" in grown


def test_the_fragment_is_the_whole_polled_overview(viewer_client: Client, healthy: None) -> None:
    response = viewer_client.get("/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    tiles = response.content.decode()
    assert "<html" not in tiles
    assert tiles.lstrip().startswith(
        '<div class="tiles" id="tiles" hx-get="/" hx-trigger="every 5s"'
    )
    for part in (
        'id="state"',
        'id="throughput"',
        'id="wait"',
        'id="backlogs"',
        'id="grown-groups"',
    ):
        assert part in tiles
    assert 'id="banner" hx-swap-oob="true"' in tiles


def test_the_poll_is_bounded_whatever_the_history(viewer_client: Client, healthy: None) -> None:
    """A fixed number of queries; the dead-letter table only through a capped
    count on its index, the minutes only of the last hour."""

    def polled() -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            viewer_client.get("/", HTTP_HX_REQUEST="true")
        return [q["sql"] for q in queries.captured_queries]

    make_dead_letters(1, failed_at=timezone.now().isoformat())
    few = polled()
    now = timezone.now()
    fold(*[runs(f"demo.tasks.t{n}", at=now - timedelta(minutes=n), succeeded=1, failed={"E": 1})
           for n in range(40)])  # fmt: skip
    make_dead_letters(30, failed_at=now.isoformat())
    make_dead_letters(30, task="demo.tasks.other", failed_at=now.isoformat())
    many = polled()
    assert len(many) == len(few)
    table = '"deadletters_deadletter"'
    scans = [sql for sql in many if f"FROM {table}" in sql]
    assert scans and all("LIMIT" in sql.upper() for sql in scans), scans
    minutes = [sql for sql in many if 'FROM "dashboard_taskminute"' in sql]
    assert len(minutes) == 2
    assert all('"dashboard_taskminute"."minute" >=' in sql for sql in minutes)
