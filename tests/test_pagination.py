"""Page numbers in the URL: a bad one shows the nearest page that exists, never a 500.

Not a whole number (``abc``, ``-1``, ``1e5``): the first page. Past the end,
however far: the last. The page size is the site's, whatever ``per_page`` says.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard import audit
from dashboard.models import QueueSnapshot, WorkerSnapshot
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db

# Each paginated page, and what one of its rows shows.
PAGES = {
    "deadletters:list": "demo.tasks.resize_image",
    "deadletters:groups": "demo.tasks.resize_image",
    "audit": "bulk_discard",
    "queues": "requeue-target",
    "workers": "w1@host",
}


@pytest.fixture
def rows(operator: User) -> None:
    """One row or more on each paginated page."""
    make_dead_letters(3)
    audit.record(user=operator, action="bulk_discard", target_filter="queue=x", count=3)
    now = timezone.now()
    QueueSnapshot.objects.create(name="requeue-target", sampled_at=now, depth=0)
    WorkerSnapshot.objects.create(hostname="w1@host", first_seen_at=now, last_seen_at=now)


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize("page", ["-1", "abc", "1e5", "0", "", "١٢"])
def test_a_page_that_is_not_a_positive_whole_number_shows_the_first(
    operator_client: Client, rows: None, name: str, page: str
) -> None:
    # An empty one is first dropped from the URL (the filtered pages drop empty fields).
    response = operator_client.get(reverse(name), {"page": page}, follow=True)
    assert response.status_code == 200
    assert PAGES[name] in response.content.decode()


@pytest.mark.parametrize("name", [n for n in PAGES if n != "deadletters:list"])
@pytest.mark.parametrize("page", ["2", "100", str(10**20), "9" * 5000])
def test_a_page_past_the_end_shows_the_last(
    operator_client: Client, rows: None, name: str, page: str
) -> None:
    response = operator_client.get(reverse(name), {"page": page})
    assert response.status_code == 200
    assert PAGES[name] in response.content.decode()


@pytest.mark.parametrize("page", ["4", "100", str(10**20), "9" * 5000])
def test_a_page_past_the_end_of_the_list_sends_you_to_its_last_page(
    operator_client: Client, settings: object, page: str
) -> None:
    # The list's paginator never counts the whole table, so it learns the end
    # by asking; then it sends the reader on instead of guessing.
    settings.DEADLETTERS_PAGE_SIZE = 2  # type: ignore[attr-defined]
    make_dead_letters(5)  # three pages
    url = reverse("deadletters:list") + f"?state=open&page={page}"
    response = operator_client.get(url)
    assert response.status_code == 302
    assert response["Location"] == reverse("deadletters:list") + "?state=open&page=3"
    response = operator_client.get(url, headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == reverse("deadletters:list") + "?state=open&page=3"
    last = operator_client.get(response["HX-Redirect"])
    assert last.status_code == 200
    assert last.content.decode().count('name="ids"') == 1


@pytest.mark.parametrize("name", PAGES)
@pytest.mark.parametrize("per_page", ["-1", "0", "1", str(10**20), "abc"])
def test_the_page_size_is_the_sites_not_the_requests(
    operator_client: Client, rows: None, name: str, per_page: str
) -> None:
    response = operator_client.get(reverse(name), {"per_page": per_page})
    assert response.status_code == 200
    assert PAGES[name] in response.content.decode()
    if name == "deadletters:list":
        assert response.content.decode().count('name="ids"') == 3  # all three on one page
