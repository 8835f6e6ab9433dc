"""The list: filters in the URL, search, sort, counts, groups."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from deadletters.models import DeadLetter
from deadletters.search import index_all_pending
from tests.helpers import make_dead_letter

pytestmark = pytest.mark.django_db


def listed(client: Client, query: str = "") -> str:
    response = client.get(f"{reverse('deadletters:list')}?{query}", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


@pytest.fixture
def incident() -> dict[str, DeadLetter]:
    now = timezone.now()
    return {
        "image": make_dead_letter(task="demo.tasks.resize_image", args=[1, {"sku": "AB-77"}],
                                  failed_at=now.isoformat()),
        "webhook": make_dead_letter(task="demo.tasks.send_webhook", queue="emails",
                                    exception_type="ConnectionError",
                                    exception_message="POST https://hooks.example.com failed",
                                    hostname="worker-2@h",
                                    failed_at=(now - timedelta(hours=2)).isoformat()),
        "old": make_dead_letter(task="demo.tasks.build_report", queue="reports",
                                exception_type="TimeLimitExceeded", exception_message="1s",
                                failed_at=(now - timedelta(days=3)).isoformat()),
    }  # fmt: skip


def test_it_filters_by_task_queue_exception_and_worker(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    assert "send_webhook" in listed(operator_client, "task=demo.tasks.send_webhook")
    page = listed(operator_client, "queue=reports")
    assert "build_report" in page and "resize_image" not in page
    page = listed(operator_client, "exception=ConnectionError")
    assert "send_webhook" in page and "build_report" not in page
    page = listed(operator_client, "worker=worker-2@h")
    assert "send_webhook" in page and "resize_image" not in page


def test_it_filters_by_time_range_and_custom_window(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    page = listed(operator_client, "range=1h")
    assert "resize_image" in page and "send_webhook" not in page and "build_report" not in page
    page = listed(operator_client, "range=24h")
    assert "send_webhook" in page and "build_report" not in page
    since = (timezone.now() - timedelta(days=4)).strftime("%Y-%m-%dT%H:%M")
    until = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    page = listed(operator_client, f"since={since}&until={until}")
    assert "build_report" in page and "resize_image" not in page


def test_the_search_finds_ids_messages_and_arguments(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    index_all_pending()  # on PostgreSQL the indexer moves rows into the trigram table
    webhook = incident["webhook"]
    assert "send_webhook" in listed(operator_client, f"q={webhook.task_id}")
    assert "send_webhook" in listed(operator_client, "q=HOOKS.example")
    page = listed(operator_client, "q=ab-77")
    assert "resize_image" in page and "send_webhook" not in page


def test_the_search_finds_rows_the_indexer_has_not_reached_yet(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    assert "resize_image" in listed(operator_client, "q=ab-77")


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "in the outbox"])
def test_a_search_counts_the_rows_it_lists(
    operator_client: Client, incident: dict[str, DeadLetter], indexed: bool
) -> None:
    """A search alone is counted on the search index (PostgreSQL), the list by
    its filter: both must say the same, whether or not the indexer ran."""
    make_dead_letter(task="demo.tasks.resize_image", args=[2, {"sku": "AB-77"}])
    # A requeued row is found by its requeue's id, which its text does not hold.
    DeadLetter.objects.filter(pk=incident["old"].pk).update(requeue_task_id="Rq-NEW-ID-0001")
    if indexed:
        index_all_pending()
    webhook = incident["webhook"]
    for term, expected in (("ab-77", 2), ("AB-7", 2), ("example", 1), (webhook.task_id, 1),
                           ("Rq-NEW-ID-0001", 1), ("no such text", 0)):  # fmt: skip
        page = listed(operator_client, f"q={term}")
        rows = page.count('class="pick"')
        assert rows == expected, term
        if expected:
            assert f"<b data-count>{expected}</b> matching" in page, term


def test_a_filter_that_matches_nothing_says_so(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    page = listed(operator_client, "task=nothing.like.this")
    assert "No dead letters match this filter" in page
    assert "No dead letters yet" not in page


def test_it_sorts_by_a_column(operator_client: Client, incident: dict[str, DeadLetter]) -> None:
    page = listed(operator_client, "sort=task_name")
    assert page.index("build_report") < page.index("resize_image") < page.index("send_webhook")
    page = listed(operator_client, "sort=-task_name")
    assert page.index("send_webhook") < page.index("resize_image")


def test_the_filter_lives_in_the_url_and_the_full_page_renders_it(
    operator_client: Client, incident: dict[str, DeadLetter]
) -> None:
    page = operator_client.get(reverse("deadletters:list") + "?queue=emails&state=open")
    html = page.content.decode()
    assert "<html" in html
    assert 'value="emails"' in html
    assert '<option value="open" selected>' in html
    table = html[html.index("<table") :]
    assert "send_webhook" in table
    assert "build_report" not in table


def test_an_emptied_last_page_sends_you_to_the_one_before(
    operator_client: Client, settings: object
) -> None:
    settings.DEADLETTERS_PAGE_SIZE = 2  # type: ignore[attr-defined]
    for _ in range(2):
        make_dead_letter()
    response = operator_client.get(reverse("deadletters:list") + "?state=open&page=2")
    assert response.status_code == 302
    assert response["Location"].endswith("page=1")
    response = operator_client.get(
        reverse("deadletters:list") + "?state=open&page=2", HTTP_HX_REQUEST="true"
    )
    assert response["HX-Redirect"].endswith("page=1")


def test_groups_show_counts_and_the_last_day(operator_client: Client) -> None:
    for n in range(3):
        make_dead_letter(exception_message=f"image {n} has an unsupported colour profile")
    make_dead_letter(task="demo.tasks.send_webhook", exception_type="ConnectionError")
    response = operator_client.get(reverse("deadletters:groups"))
    page = response.content.decode()
    assert response.status_code == 200
    rows = page.split("<tbody>")[1].split("<tr>")[1:]  # the body's rows
    assert "resize_image" in rows[0] and ">3</td>" in rows[0]  # the biggest group first
    assert "send_webhook" in rows[1]
    assert "<svg" in rows[0] and "<title>3</title>" in rows[0]
    fragment = operator_client.get(reverse("deadletters:groups"), HTTP_HX_REQUEST="true")
    assert b"<html" not in fragment.content and b'<div id="groups">' in fragment.content


def test_a_group_links_to_its_open_rows(operator_client: Client) -> None:
    row = make_dead_letter()
    page = operator_client.get(reverse("deadletters:groups")).content.decode()
    assert f"?signature={row.signature}&amp;state=open" in page


def test_search_treats_like_wildcards_as_text(operator_client: Client) -> None:
    make_dead_letter(task="demo.tasks.a", exception_message="disk 100% full")
    make_dead_letter(task="demo.tasks.b", exception_message="disk 1000 full")
    index_all_pending()
    page = listed(operator_client, "q=100%25")
    assert "demo.tasks.a" in page
    assert "demo.tasks.b" not in page


def test_a_very_common_term_is_found_by_walking_the_newest_rows(
    operator_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deadletters import search

    monkeypatch.setattr(search, "COMMON_TERM", 1)
    for n in range(3):
        make_dead_letter(task=f"demo.tasks.t{n}", exception_message="timeout talking to stripe")
    make_dead_letter(task="demo.tasks.other", exception_message="nothing alike")
    index_all_pending()
    page = listed(operator_client, "q=stripe")
    assert all(f"demo.tasks.t{n}" in page for n in range(3))
    assert "demo.tasks.other" not in page
    # Counted on the index up to the common term: more than that is said so.
    counted = "more than 1" if connection.vendor == "postgresql" else "3"
    assert f"<b data-count>{counted}</b> matching" in page
