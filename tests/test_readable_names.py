"""Names people can read: a failure group by its task and exception (never its
hash), filter URLs with only what is set, "just now", and the groups page's
24-hour chart in its own column."""

from __future__ import annotations

import logging
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from dashboard.models import AuditEvent
from dashboard.templatetags.ops import ago
from deadletters import bulk, bulk_runner
from deadletters.models import BulkAction, DeadLetter, DeadLetterGroup
from tests.helpers import make_dead_letter, make_dead_letters

pytestmark = pytest.mark.django_db

NAME = "demo.tasks.resize_image · ValueError: image <n> has an unsupported colour profile"


def resize_failures(count: int = 3) -> list[DeadLetter]:
    return make_dead_letters(count, exception_message="image 7 has an unsupported colour profile")


def discard_group(user: User, signature: str) -> BulkAction:
    """What the groups page's "Discard all" asks for."""
    return bulk.create(
        user=user,
        action="discard",
        reason="known bug",
        filter_query=f"signature={signature}&state=open",
    )


class Cells(HTMLParser):
    """A table's header texts and, for each body row, the markup of each cell."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[tuple[str, str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._row = []
        elif tag in ("th", "td"):
            self._cell = []
        elif self._cell is not None:
            self._cell.append(self.get_starttag_text() or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None:
            self._row.append((tag, "".join(self._cell).strip()))
            self._cell = None
        elif tag == "tr":
            cells = [content for _, content in self._row]
            if all(kind == "th" for kind, _ in self._row):
                self.headers = cells
            else:
                self.rows.append(cells)
        elif self._cell is not None:
            self._cell.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def table_cells(page: str, table_id: str) -> Cells:
    start = page.index(f'id="{table_id}"')
    table = page[page.rindex("<table", 0, start) : page.index("</table>", start)]
    cells = Cells()
    cells.feed(table)
    return cells


# --- a group's name ------------------------------------------------------------------------


def test_a_group_is_named_by_its_task_and_its_normalised_exception() -> None:
    (row,) = resize_failures(1)
    assert DeadLetterGroup.objects.get(signature=row.signature).name == NAME
    assert str(DeadLetterGroup.objects.get(signature=row.signature)) == NAME


def test_the_audit_page_names_the_group_not_its_hash(operator: User, viewer_client: Client) -> None:
    signature = resize_failures()[0].signature
    discard_group(operator, signature)
    page = viewer_client.get(reverse("audit")).content.decode()
    assert escape(NAME) in page
    assert signature[:8] not in page


def test_the_audit_page_still_names_the_group_once_its_row_is_pruned(
    operator: User, viewer_client: Client
) -> None:
    signature = resize_failures()[0].signature
    discard_group(operator, signature)
    DeadLetterGroup.objects.filter(signature=signature).delete()
    page = viewer_client.get(reverse("audit")).content.decode()
    assert escape(NAME) in page
    assert signature[:8] not in page


def test_an_event_stored_with_the_hash_alone_is_named_at_display_in_one_query(
    viewer_client: Client,
) -> None:
    signatures = [
        make_dead_letter(task=f"demo.tasks.t{n}", exception_type="KeyError").signature
        for n in range(5)
    ]
    for signature in signatures:
        # As the audit stored a group action before groups had names.
        AuditEvent.objects.create(
            action="bulk_discard", target_type="deadletter",
            target_filter=f"signature={signature}&state=open", count=1, reason="old",
            details={"filter": f"group {signature!r}"},
        )  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        page = viewer_client.get(reverse("audit")).content.decode()
    assert all(f"demo.tasks.t{n} · KeyError" in page for n in range(5))
    assert not any(signature[:8] in page for signature in signatures)
    group_reads = [q for q in queries.captured_queries if "deadlettergroup" in q["sql"]]
    assert len(group_reads) == 1, "one query names the page's groups"


def test_the_progress_page_names_the_group_also_after_its_row_is_pruned(
    operator: User, operator_client: Client
) -> None:
    signature = resize_failures()[0].signature
    action = discard_group(operator, signature)
    assert NAME in action.filter_description
    DeadLetterGroup.objects.filter(signature=signature).delete()
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert escape(NAME) in page
    assert signature[:8] not in page.replace(f"signature={signature}", "")


def test_an_action_stored_with_the_hash_is_named_on_its_page(
    operator: User, operator_client: Client
) -> None:
    signature = resize_failures()[0].signature
    action = discard_group(operator, signature)
    BulkAction.objects.filter(pk=action.pk).update(filter_description=f"group {signature!r}")
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert escape(NAME) in page


def test_the_log_lines_of_a_group_action_name_the_group(
    operator: User, caplog: pytest.LogCaptureFixture
) -> None:
    signature = resize_failures()[0].signature
    with caplog.at_level(logging.INFO):
        action = discard_group(operator, signature)
        bulk_runner.run(action)
    audit_lines = [r.getMessage() for r in caplog.records if r.name == "dashboard.audit"]
    assert len(audit_lines) == 2  # asked, finished
    assert all(f'"group": "{NAME}"' in line for line in audit_lines)
    runner_lines = [r.getMessage() for r in caplog.records if r.name == "deadletters.bulk"]
    assert (
        f"bulk action {action.pk} (discard of group '{NAME}'): started, 3 open rows" in runner_lines
    )
    assert any(
        line.startswith(f"bulk action {action.pk} (discard of group '{NAME}'): done")
        for line in runner_lines
    )


def test_the_list_says_which_group_it_shows_by_name(operator_client: Client) -> None:
    signature = resize_failures()[0].signature
    page = operator_client.get(reverse("deadletters:list") + f"?signature={signature}").content
    assert f"in group <b data-group>{escape(NAME)}</b>" in page.decode()


# --- filter URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["deadletters:list", "audit"])
def test_a_get_with_empty_parameters_is_sent_to_the_url_without_them(
    name: str, operator_client: Client
) -> None:
    url = reverse(name)
    response = operator_client.get(f"{url}?q=&state=open&task=&queue=&username=&until=")
    assert response.status_code == 302
    assert response["Location"] == f"{url}?state=open"
    response = operator_client.get(f"{url}?q=&task=", HTTP_HX_REQUEST="true")
    assert response.status_code == 302 and response["Location"] == url
    assert operator_client.get(f"{url}?state=open").status_code == 200


def test_the_consoles_links_carry_only_the_fields_that_are_set(
    operator_client: Client, settings: Any
) -> None:
    settings.DEADLETTERS_PAGE_SIZE = 2
    resize_failures(5)
    page = operator_client.get(reverse("deadletters:list") + "?task=demo.tasks.resize_image&page=2")
    html = page.content.decode()
    links = [href for href in _hrefs(html) if "?" in href]
    assert any("page=" in href for href in links) and any("sort=" in href for href in links)
    for href in links:
        assert all(value for _, value in parse_qsl(urlsplit(href).query, keep_blank_values=True)), (
            href
        )
    assert 'name="filter_query" value="task=demo.tasks.resize_image"' in html


def _hrefs(html: str) -> list[str]:
    class Links(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [value or "" for key, value in attrs if key in ("href", "hx-get")]

    parser = Links()
    parser.found = []
    parser.feed(html)
    return parser.found


# --- "just now" ----------------------------------------------------------------------------


def test_times_under_ten_seconds_say_just_now() -> None:
    assert ago(0) == ago(9.9) == ago(timezone.now()) == "just now"
    assert ago(10) == "10 s ago"
    assert ago(timezone.now() - timedelta(minutes=7, seconds=3)) == "7 min ago"
    assert ago(None) == ""


def test_the_groups_page_says_just_now_not_zero_minutes(operator_client: Client) -> None:
    resize_failures(1)
    page = operator_client.get(reverse("deadletters:groups")).content.decode()
    assert "just now" in page
    assert "0 minutes" not in page and "0 s ago" not in page


# --- the groups page's chart ---------------------------------------------------------------


def test_the_24_hour_chart_is_drawn_in_its_column(operator_client: Client) -> None:
    resize_failures(2)
    page = operator_client.get(reverse("deadletters:groups")).content.decode()
    cells = table_cells(page, "group-table")
    column = cells.headers.index("Last 24 h")
    (row,) = cells.rows
    assert len(row) == len(cells.headers)
    charts = [i for i, cell in enumerate(row) if "<svg" in cell]
    assert charts == [column]
    chart = row[column]
    assert 'aria-label="failures per hour, last 24 hours, peak 2"' in chart
    # The baseline spans the whole window, so the chart is seen under its
    # header even when only the last hour has a bar.
    assert '<line class="baseline" x1="0"' in chart and 'x2="120"' in chart
