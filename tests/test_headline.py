"""Every page's title and icon say the cluster's state and its open dead letters
("(35) Degraded · Queues · Celery Ops"), polled fragments carry them out of
band, the state is judged at most every few seconds per process, and neither
a database error nor a missing role shows anything it should not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import OperationalError
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import overview
from dashboard.models import QueuePause, QueueSnapshot, WorkerSnapshot
from dashboard.monitor.status import record_failure, record_success
from tests.helpers import make_dead_letters, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_cached_state() -> Iterator[None]:
    cache.delete(overview.HEADLINE_KEY)
    yield
    cache.delete(overview.HEADLINE_KEY)


@pytest.fixture
def healthy() -> None:
    record_success("broker")
    record_success("workers")
    QueueSnapshot.objects.create(name="default", sampled_at=timezone.now(), depth=0)
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=timezone.now(), last_seen_at=timezone.now(),
        queues=["default"],
    )  # fmt: skip


def title(page: str) -> str:
    """The document's title (the charts' SVG titles come later, in the body)."""
    (text,) = re.findall(r"<title>([^<]*)</title>", page.split("</head>")[0])
    return text


def icon(page: str) -> str:
    (link,) = re.findall(r'<link rel="icon" id="favicon"[^>]*>', page)
    return link


def test_the_overview_title_leads_with_the_state_and_the_open_dead_letters(
    viewer_client: Client, healthy: None
) -> None:
    page = viewer_client.get("/").content.decode()
    assert title(page) == "(0) Healthy · Celery Ops"
    assert 'href="/static/dashboard/favicon-healthy.svg"' in icon(page)
    make_dead_letters(3)
    QueuePause.objects.create(queue="default", username="olivia")
    page = viewer_client.get("/").content.decode()
    assert title(page) == "(3) Degraded · Celery Ops"
    assert 'href="/static/dashboard/favicon-degraded.svg"' in icon(page)
    assert 'data-headline="(3) Degraded"' in icon(page)


def test_every_other_page_keeps_its_name_after_the_state(
    viewer_client: Client, healthy: None
) -> None:
    record_failure("broker", ConnectionError("Error 111"))
    for url, name in (
        (reverse("queues"), "Queues"),
        (reverse("deadletters:list"), "Dead letters"),
        (reverse("audit"), "Audit"),
    ):
        page = viewer_client.get(url).content.decode()
        assert title(page) == f"(0) Failing · {name} · Celery Ops", url
        assert "favicon-failing.svg" in icon(page), url


@pytest.mark.parametrize("url", ["/", "/queues/", "/workers/", "/tasks/", "/periodic/"])
def test_a_polled_fragment_carries_the_icon_and_the_headline_out_of_band(
    viewer_client: Client, healthy: None, url: str
) -> None:
    make_dead_letters(2)
    fragment = viewer_client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment
    link = icon(fragment)
    assert 'hx-swap-oob="true"' in link
    assert 'data-headline="(2) Healthy"' in link


def test_the_state_is_judged_at_most_every_few_seconds(
    viewer_client: Client, healthy: None, settings: Any
) -> None:
    settings.STATE_CACHE_SECONDS = 60
    assert title(viewer_client.get("/queues/").content.decode()).startswith("(0) Healthy")
    make_dead_letters(2)
    # Cached: the queue page says what it said.
    assert title(viewer_client.get("/queues/").content.decode()).startswith("(0) Healthy")
    # The overview judges afresh on every poll, and the other pages take its word.
    assert title(viewer_client.get("/").content.decode()).startswith("(2) Healthy")
    assert title(viewer_client.get("/queues/").content.decode()).startswith("(2) Healthy")


def test_a_database_error_costs_the_title_its_state_not_the_page(
    viewer_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(now: object = None) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(overview, "read_cluster", broken)
    response = viewer_client.get(reverse("deadletters:list"))
    assert response.status_code == 200
    page = response.content.decode()
    assert title(page) == "Dead letters · Celery Ops"
    assert 'href="/static/dashboard/favicon.svg"' in icon(page)
    assert "data-headline" not in icon(page)


def test_a_person_without_a_role_learns_nothing_of_the_cluster(client: Client) -> None:
    make_dead_letters(2)
    client.force_login(make_user("nora"))
    response = client.get(reverse("deadletters:list"))
    assert response.status_code == 403
    page = response.content.decode()
    assert title(page) == "Not allowed · Celery Ops"
    assert "data-headline" not in icon(page)


def test_the_log_in_page_has_the_plain_icon(client: Client) -> None:
    page = client.get(reverse("login")).content.decode()
    assert title(page) == "Log in · Celery Ops"
    assert 'href="/static/dashboard/favicon.svg"' in icon(page)
