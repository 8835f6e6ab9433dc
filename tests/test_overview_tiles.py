"""The overview's tiles judge their part of the cluster in a colour and in words
(never the colour alone), so that what is wrong reads from across the room."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from dashboard.models import PeriodicEntry, QueuePause, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.status import record_failure, record_success
from tests.helpers import make_dead_letters
from tests.outcome_reports import fold, runs

pytestmark = pytest.mark.django_db

TILES = ("queues", "workers", "tasks", "dead-letters", "periodic")


@pytest.fixture
def healthy() -> None:
    record_success("broker")
    record_success("workers")
    QueueSnapshot.objects.create(
        name="default", sampled_at=timezone.now(), depth=0, in_rate=1.0, out_rate=1.0
    )
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=timezone.now(), last_seen_at=timezone.now(),
        queues=["default"],
    )  # fmt: skip
    fold(runs("demo.tasks.add", succeeded=50))


def tiles(client: Client) -> dict[str, tuple[str, str]]:
    """Each tile's verdict: its level (the colour) and its words."""
    page = client.get("/").content.decode()
    found = {}
    for name in TILES:
        tile = page.split(f'id="tile-{name}"', 1)[1].split("</a>", 1)[0]
        (verdict,) = re.findall(
            r'<span class="verdict verdict-(\w+)"><span class="dot" aria-hidden="true"></span>'
            r"([^<]+)</span>",
            tile,
        )
        assert f'class="tile tile-{verdict[0]}"' in page.split(f'id="tile-{name}"', 1)[0][-80:]
        found[name] = verdict
    return found


def test_a_healthy_cluster_says_so_on_every_tile(viewer_client: Client, healthy: None) -> None:
    assert tiles(viewer_client) == {
        "queues": ("healthy", "all consumed, none paused or growing"),
        "workers": ("healthy", "all online, no check flagged"),
        "tasks": ("healthy", "every task fails under 5 %"),
        "dead-letters": ("healthy", "none open"),
        "periodic": ("unknown", "no schedule reported"),
    }
    page = viewer_client.get("/").content.decode()
    assert "nothing waiting" in page
    assert "oldest: unknown" not in page


def test_waiting_work_without_a_stamp_says_its_age_is_not_known(
    viewer_client: Client, healthy: None
) -> None:
    QueueSnapshot.objects.filter(name="default").update(depth=5)
    page = viewer_client.get("/").content.decode()
    assert "oldest: age not known (unstamped)" in page
    QueueSnapshot.objects.filter(name="default").update(oldest_age=90.0)
    assert "oldest: 1 min in default" in viewer_client.get("/").content.decode()


def paused() -> None:
    QueuePause.objects.create(queue="default", username="olivia")


def unconsumed() -> None:
    QueueSnapshot.objects.create(
        name="emails", sampled_at=timezone.now(), depth=40, in_rate=2.0, out_rate=0.0
    )


def broker_down() -> None:
    record_failure("broker", ConnectionError("Error 111"))


def worker_offline() -> None:
    WorkerSnapshot.objects.create(
        hostname="w2@host", first_seen_at=timezone.now(),
        last_seen_at=timezone.now() - timedelta(minutes=3), online=False,
    )  # fmt: skip


def no_worker_online() -> None:
    WorkerSnapshot.objects.update(online=False)


def worker_flagged() -> None:
    WorkerSnapshot.objects.update(config={"task_acks_late": False, "tasks": []})


def task_failing() -> None:
    fold(runs("demo.tasks.resize_image", succeeded=8, failed={"ValueError": 2}))


def open_dead_letters() -> None:
    make_dead_letters(35)


def ingest_stuck() -> None:
    record_failure("ingest", "Error 111 connecting to 127.0.0.1:6379")


def beat_down() -> None:
    PeriodicEntry.objects.create(name="nightly", task="demo.tasks.add", reported_at=timezone.now())


@pytest.mark.parametrize(
    ("cause", "tile", "verdict"),
    [
        (paused, "queues", ("degraded", "needs a look: 1 paused")),
        (unconsumed, "queues", ("degraded", "needs a look: 1 without a consumer, 1 growing")),
        (broker_down, "queues", ("failing", "broker unreachable: figures as last sampled")),
        (worker_offline, "workers", ("degraded", "needs a look: 1 offline")),
        (no_worker_online, "workers", ("failing", "no worker online")),
        (worker_flagged, "workers", ("degraded", "needs a look: 1 configuration check flagged")),
        (task_failing, "tasks", ("degraded", "needs a look: 1 task fail over 5 %")),
        (open_dead_letters, "dead-letters", ("failing", "35 open in all: needs a look")),
        (ingest_stuck, "dead-letters",
         ("failing", "ingestion stuck: new failures wait in the broker")),
        (beat_down, "periodic", ("failing", "beat is down: nothing is sent")),
    ],
)  # fmt: skip
def test_each_kind_of_trouble_shows_on_its_tile_in_colour_and_words(
    viewer_client: Client,
    healthy: None,
    cause: Callable[[], None],
    tile: str,
    verdict: tuple[str, str],
) -> None:
    cause()
    assert tiles(viewer_client)[tile] == verdict
