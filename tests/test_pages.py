"""The pages an operator reads: list, detail, overview, log-in, health."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from deadletters.models import DeadLetter
from tests.helpers import make_dead_letter

pytestmark = pytest.mark.django_db

XSS = '<script>alert(1)</script>"><img src=x onerror=alert(1)>'


def test_the_list_shows_newest_first(operator_client: Client) -> None:
    older = make_dead_letter(task="demo.tasks.older", failed_at="2026-01-01T00:00:00+00:00")
    newer = make_dead_letter(task="demo.tasks.newer", failed_at="2026-02-01T00:00:00+00:00")
    page = operator_client.get(reverse("deadletters:list")).content.decode()
    assert "<html" in page
    assert page.index(newer.task_name) < page.index(older.task_name)
    assert newer.get_absolute_url() in page


def test_the_list_fragment_is_only_the_table(operator_client: Client) -> None:
    make_dead_letter()
    response = operator_client.get(reverse("deadletters:list"), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"<html" not in response.content
    assert b'<div id="results">' in response.content
    assert b"<table" in response.content


def test_the_list_paginates_without_counting_the_whole_table(
    operator_client: Client, settings: object
) -> None:
    settings.DEADLETTERS_PAGE_SIZE = 5  # type: ignore[attr-defined]
    for n in range(12):
        make_dead_letter(task=f"demo.tasks.t{n}")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = operator_client.get(
            reverse("deadletters:list") + "?page=2", HTTP_HX_REQUEST="true"
        )
    page = response.content.decode()
    assert "demo.tasks.t6" in page
    assert "demo.tasks.t11" not in page
    assert "<b data-count>12</b> matching" in page
    table_queries = [
        q["sql"] for q in queries.captured_queries if "deadletters_deadletter" in q["sql"]
    ]
    counts = [sql for sql in table_queries if "COUNT(" in sql.upper()]
    assert counts, "the page shows a count"
    assert all("LIMIT" in sql.upper() for sql in counts), "a count over the whole table"
    rows = [sql for sql in table_queries if "COUNT(" not in sql.upper() and "LIMIT" in sql.upper()]
    assert rows
    assert not any('"traceback"' in sql for sql in rows)


def test_an_empty_list_explains_how_to_hook_up_an_app(operator_client: Client) -> None:
    page = operator_client.get(reverse("deadletters:list")).content.decode()
    assert "No dead letters yet" in page
    assert "import deadletters.hook" in page


def test_the_detail_shows_arguments_traceback_and_headers(operator_client: Client) -> None:
    dead_letter = make_dead_letter(
        kwargs={"customer": {"id": 7}}, headers={"x_queue": "default", "tenant": "acme"}
    )
    page = operator_client.get(dead_letter.get_absolute_url()).content.decode()
    assert "&quot;customer&quot;: {\n    &quot;id&quot;: 7\n  }" in page  # pretty JSON
    assert "Traceback (most recent call last)" in page
    assert "tenant" in page
    assert "Requeue" in page
    assert "Discard" in page


def test_a_viewer_sees_no_action_buttons(viewer_client: Client) -> None:
    dead_letter = make_dead_letter()
    page = viewer_client.get(dead_letter.get_absolute_url()).content.decode()
    assert "Requeue</button>" not in page
    assert "Discard</button>" not in page


def test_hostile_text_is_rendered_as_text(operator_client: Client) -> None:
    dead_letter = make_dead_letter(
        args=[XSS], exception_message=XSS, traceback=XSS, task="demo.tasks.x" + XSS
    )
    for url in (dead_letter.get_absolute_url(), reverse("deadletters:list")):
        page = operator_client.get(url).content.decode()
        assert "<script>alert(1)</script>" not in page
        assert "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_quarantined_row_shows_its_reason_and_raw_bytes(operator_client: Client) -> None:
    row = DeadLetter.objects.create(
        dedupe_key="raw:1",
        kind="quarantined",
        quarantine_reason="the body is not valid JSON",
        raw_body=b"{broken \xff",
        failed_at="2026-01-01T00:00:00Z",
        signature="s",
    )
    page = operator_client.get(row.get_absolute_url()).content.decode()
    assert "the body is not valid JSON" in page
    assert "{broken \\xff" in page
    assert "Requeue</button>" not in page


def test_a_missing_dead_letter_is_404_not_500(operator_client: Client) -> None:
    assert operator_client.get(reverse("deadletters:detail", args=[999999])).status_code == 404


def test_every_page_needs_a_login(client: Client) -> None:
    dead_letter = make_dead_letter()
    for url in ("/", reverse("deadletters:list"), dead_letter.get_absolute_url()):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_healthz_answers_without_login(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.content == b"ok\n"


def test_the_overview_counts_open_dead_letters_of_the_last_hour(operator_client: Client) -> None:
    from django.utils import timezone

    make_dead_letter(failed_at=timezone.now().isoformat())
    make_dead_letter(failed_at="2020-01-01T00:00:00+00:00")
    page = operator_client.get("/").content.decode()
    assert '<span class="figure">1</span>' in page


def test_htmx_is_served_from_our_own_static_files(operator_client: Client) -> None:
    page = operator_client.get("/").content.decode()
    assert '<script src="/static/django_htmx/htmx-2.min.js" defer></script>' in page
    assert not [src for src in re.findall(r'src="([^"]+)"', page) if not src.startswith("/")]
    static = operator_client.get("/static/django_htmx/htmx-2.min.js")
    assert static.status_code == 200


def test_the_list_does_not_query_once_per_row(operator_client: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.helpers import make_dead_letters

    make_dead_letters(3)
    with CaptureQueriesContext(connection) as few:
        operator_client.get(reverse("deadletters:list"))
    make_dead_letters(20)
    with CaptureQueriesContext(connection) as many:
        operator_client.get(reverse("deadletters:list"))
    assert len(many.captured_queries) == len(few.captured_queries)
