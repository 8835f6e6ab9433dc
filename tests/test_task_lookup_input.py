"""Where is task X? from the header's box: who may look, what a prefix finds, and
any input (a URL, the q parameter) answered with a page or a 4xx, never a 500.

No worker here: the dead letters come through the real ingest, the snapshot as
the monitor stores it, the queues and the result backend are the test Redis."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from dashboard.models import WorkerSnapshot
from tests.helpers import make_dead_letter, make_user

pytestmark = pytest.mark.django_db

SEARCH = "/tasks/id/"


def test_anonymous_is_sent_to_log_in(client: Client) -> None:
    for url in (f"{SEARCH}?q=abcdefgh", f"{SEARCH}abcdefgh-1234/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_the_header_has_the_search_box_on_every_page(viewer_client: Client) -> None:
    page = viewer_client.get(reverse("tasks")).content.decode()
    assert f'<form class="task-search" method="get" action="{SEARCH}" role="search">' in page
    assert '<label for="task-search-q" class="visually-hidden">' in page
    assert 'id="task-search-q" name="q" type="search"' in page
    assert 'aria-keyshortcuts="t"' in page


def test_a_whole_id_opens_its_page(viewer_client: Client) -> None:
    task_id = "8c1b7a0e-4e7f-4f40-9a53-2b8f0d4c1e11"
    response = viewer_client.get(SEARCH, {"q": f"  {task_id} "})
    assert response.status_code == 302
    assert response["Location"] == f"{SEARCH}{task_id}/"


def test_a_prefix_with_one_match_opens_it(viewer_client: Client) -> None:
    dead_letter = make_dead_letter()
    response = viewer_client.get(SEARCH, {"q": dead_letter.task_id[:8]})
    assert response.status_code == 302
    assert response["Location"] == f"{SEARCH}{dead_letter.task_id}/"


def test_a_prefix_lists_its_matches_in_the_dead_letters_and_the_snapshot(
    viewer_client: Client,
) -> None:
    make_dead_letter(id="order-2024-0001", root_id="order-2024-0001")
    make_dead_letter(id="order-2024-0002", root_id="order-2024-0002")
    now = timezone.now()
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=now, last_seen_at=now,
        active=[{"id": "order-2024-0003", "name": "demo.tasks.add"}],
        scheduled=[{"id": "ORDER-2024-0004", "name": "demo.tasks.add", "eta": "soon"}],
    )  # fmt: skip
    response = viewer_client.get(SEARCH, {"q": "order-2024"})
    assert response.status_code == 200
    page = response.content.decode()
    found = re.findall(r'<a href="/tasks/id/([^/"]+)/"><code>', page)
    assert sorted(found) == ["order-2024-0001", "order-2024-0002", "order-2024-0003"]
    assert "(worker snapshot," in page
    assert (
        '<a href="/tasks/id/order-2024/">Look up <code>order-2024</code> as a whole id</a>' in page
    )


def test_a_prefix_shorter_than_eight_is_a_400_naming_the_field(viewer_client: Client) -> None:
    response = viewer_client.get(SEARCH, {"q": "abc1234"})
    assert response.status_code == 400
    assert "q: give at least 8 characters of the task id" in response.content.decode()
    assert viewer_client.get(SEARCH).status_code == 400
    assert "q: give a task id" in viewer_client.get(SEARCH).content.decode()


def test_an_id_the_database_cannot_hold_is_a_400_or_404(viewer_client: Client) -> None:
    response = viewer_client.get(f"{SEARCH}{quote('a' * 8 + chr(0))}/")
    assert response.status_code == 404, "the URL converter refuses NUL"
    response = viewer_client.get(SEARCH, {"q": "a" * 10_000})
    assert response.status_code == 400
    assert "q: a task id has at most 255 characters" in response.content.decode()
    response = viewer_client.get(f"{SEARCH}{quote('abc' + chr(7) + 'defgh')}/")
    assert response.status_code == 400
    assert "task_id: a task id holds no control characters" in response.content.decode()


def test_a_user_in_no_group_gets_403(client: Client, db: None) -> None:
    client.force_login(make_user("nobody"))
    assert client.get(f"{SEARCH}abcdefgh/").status_code == 403
    assert client.get(SEARCH, {"q": "abcdefgh"}).status_code == 403


def test_a_broker_that_does_not_answer_or_cannot_be_searched_is_said(
    viewer_client: Client, settings: Any
) -> None:
    settings.MONITOR_QUEUES = ["default"]
    WorkerSnapshot.objects.create(
        hostname="w1@host", first_seen_at=timezone.now(), last_seen_at=timezone.now(),
        queues=["default"],
    )  # fmt: skip
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = viewer_client.get(f"{SEARCH}abcdefgh-gone/")
    assert response.status_code == 200
    assert "The broker stopped answering" in response.content.decode()
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    page = viewer_client.get(f"{SEARCH}abcdefgh-gone/").content.decode()
    assert "cannot be searched without consuming, so they are not." in page


@examples(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.text(alphabet="/%?#.\\ \x00\n\u200b\U0001f600\udfff", max_size=40),
        st.builds(lambda n: "é/" * n, st.integers(0, 6_000)),
    )
)
def test_any_input_is_a_page_or_a_4xx_never_a_500(viewer_client: Client, text: str) -> None:
    safe = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    as_path = viewer_client.get(f"{SEARCH}{quote(safe, safe='')}/")
    assert as_path.status_code in (200, 400, 404), as_path.status_code
    as_query = viewer_client.get(SEARCH, {"q": safe})
    assert as_query.status_code in (200, 302, 400), as_query.status_code


SECRET = "§§secret§§"
NOT_SECRET = st.text(alphabet=st.characters(exclude_characters="§"), max_size=8)


@examples(max_examples=200, deadline=None)
@given(
    others=st.dictionaries(NOT_SECRET, st.integers() | NOT_SECRET, max_size=4),
    key=st.sampled_from(["password", "api_key", "X-Auth-Token", "card_number"]),
    args=st.lists(st.integers() | NOT_SECRET, max_size=3),
    cut=st.integers(min_value=0, max_value=300),
)
def test_arguments_stored_as_reprs_never_show_a_sensitive_value(
    others: dict[str, Any], key: str, args: list[Any], cut: int
) -> None:
    """django-celery-results stores the worker's reprs of the arguments, whole or
    cut: read back or not, a sensitive key's value never reaches the page."""
    from dashboard.tasks.lookup import shown_arguments

    kwargs = {**others, key: SECRET, "nested": ({key: SECRET}, [args])}
    for stored in (repr(kwargs), repr(kwargs)[:cut], repr((args, kwargs)), kwargs):
        assert SECRET not in shown_arguments(stored)
