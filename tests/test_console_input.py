"""What the console refuses: input it cannot act on faithfully is a 422 that
names the field and says why, never a 500 and never silently ignored."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from deadletters import bulk
from deadletters.envelope import MAX_DEPTH
from deadletters.models import BulkAction, DeadLetter
from deadletters.search import MAX_LENGTH
from tests.helpers import make_dead_letter, make_dead_letters

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


# --- the list's search ----------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "fragment"])
def test_a_search_longer_than_the_limit_is_refused_naming_q_and_the_limit(
    operator_client: Client, headers: dict[str, str]
) -> None:
    make_dead_letter()
    response = operator_client.get(
        reverse("deadletters:list"), {"q": "a" * 60_000}, headers=headers
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert (
        f"<code>q</code>: The search is limited to {MAX_LENGTH} characters;"
        " this one has 60000." in page
    )
    assert ("<html" in page) is not bool(headers)
    assert 'name="ids"' not in page  # nothing listed for a filter it could not apply


def test_a_search_as_long_as_the_limit_is_served(operator_client: Client) -> None:
    make_dead_letter()
    response = operator_client.get(reverse("deadletters:list"), {"q": "a" * MAX_LENGTH})
    assert response.status_code == 200
    assert 'maxlength="200"' in response.content.decode()


def test_an_audit_filter_it_cannot_apply_is_refused_naming_the_field(
    operator_client: Client, operator: User
) -> None:
    response = operator_client.get(reverse("audit"), {"since": "2000-13-01"})
    assert response.status_code == 422
    assert "<code>since</code>: Enter a valid date/time." in response.content.decode()


# --- bulk actions -----------------------------------------------------------------


def ask_bulk(client: Client, **data: Any) -> Any:
    data = {"action": "discard", "reason": "noise", **data}
    return client.post(reverse("deadletters:bulk_create"), data, headers=HTMX)


@pytest.mark.parametrize("ids", [str(10**30), "-1", "abc", "1e3", "١٢", "0"])
def test_bulk_ids_that_are_not_ids_are_422_naming_ids(operator_client: Client, ids: str) -> None:
    rows = make_dead_letters(2)
    response = ask_bulk(operator_client, scope="selected", ids=[rows[0].pk, ids])
    assert response.status_code == 422
    page = response.content.decode()
    assert "<code>ids</code>:" in page
    assert "is not a dead-letter id (a whole number from 1 to 9,223,372,036,854,775,807)" in page
    assert not BulkAction.objects.exists()


@pytest.mark.parametrize(
    ("filter_query", "field"),
    [
        ("until=2000-13-01", "until"),
        ("range=30d", "range"),
        ("since=yesterday", "since"),
        ("state=limbo", "state"),
        ("task=x&q=" + "a" * (MAX_LENGTH + 1), "q"),
    ],
)
def test_a_bulk_filter_the_list_would_refuse_is_422_naming_the_field(
    operator_client: Client, filter_query: str, field: str
) -> None:
    make_dead_letters(3)
    response = ask_bulk(operator_client, scope="filter", filter_query=filter_query)
    assert response.status_code == 422
    page = response.content.decode()
    assert "<code>filter_query</code>: The filter is not valid:" in page
    assert f" {field}: " in page
    assert not BulkAction.objects.exists()
    assert DeadLetter.objects.filter(state="open").count() == 3


def test_the_bulk_service_refuses_a_filter_the_list_would_refuse(operator: User) -> None:
    make_dead_letters(2)
    with pytest.raises(bulk.InvalidFilter, match="until"):
        bulk.create(user=operator, action="discard", reason="r", filter_query="until=2000-13-01")
    with pytest.raises(bulk.InvalidFilter, match="range"):
        bulk.confirm_size(filter_query="range=30d")
    assert not BulkAction.objects.exists()


# --- edit and requeue --------------------------------------------------------------


def edit(client: Client, row: DeadLetter, **fields: str) -> Any:
    data = {"args": json.dumps(row.args), "kwargs": json.dumps(row.kwargs), "queue": row.queue,
            "reason": "", **fields}  # fmt: skip
    return client.post(reverse("deadletters:edit", args=[row.pk]), data)


def shown_values(page: str) -> dict[str, str]:
    """What a form's textareas and text inputs hold, as a browser would submit them."""
    # A browser drops the newline that Django writes after <textarea ...>.
    areas = re.findall(r'<textarea name="(\w+)"[^>]*>\n?(.*?)</textarea>', page, re.S)
    inputs = re.findall(r'<input type="text" name="(\w+)"(?: value="([^"]*)")?', page)
    return {name: html.unescape(value) for name, value in [*areas, *inputs]}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_arguments_nested_deeper_than_ingest_keeps_are_422_naming_the_field(
    operator_client: Client, depth: int
) -> None:
    row = make_dead_letter()
    response = edit(operator_client, row, args="[" * depth + "]" * depth)
    assert response.status_code == 422
    assert f'id="args-error">Nested deeper than {MAX_DEPTH} levels.</p>' in (
        response.content.decode()
    )
    row.refresh_from_db()
    assert row.state == DeadLetter.State.OPEN


@pytest.mark.parametrize(
    "kwargs",
    ['{"a": NaN}', '{"a": 1e400}', '{"a": "\\u0000"}', '{"\\ud800": 1}', '{"a": -Infinity}'],
)
def test_arguments_no_database_stores_are_422_naming_the_field(
    operator_client: Client, kwargs: str
) -> None:
    row = make_dead_letter()
    response = edit(operator_client, row, kwargs=kwargs)
    assert response.status_code == 422
    assert 'id="kwargs-error">' in response.content.decode()
    row.refresh_from_db()
    assert row.state == DeadLetter.State.OPEN


def test_arguments_as_deep_as_ingest_keeps_are_requeued(
    operator_client: Client, broker: redis.Redis
) -> None:
    row = make_dead_letter(queue="requeue-target")
    response = edit(operator_client, row, args="[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.state == DeadLetter.State.REQUEUED


@pytest.mark.parametrize(("args", "kwargs"), [([], {}), ([1], {}), ([], {"a": 1})])
def test_an_unchanged_form_for_a_task_without_arguments_requeues(
    operator_client: Client, broker: redis.Redis, args: list[Any], kwargs: dict[str, Any]
) -> None:
    row = make_dead_letter(args=args, kwargs=kwargs, queue="requeue-target")
    url = reverse("deadletters:edit", args=[row.pk])
    form = shown_values(operator_client.get(url).content.decode())
    assert (json.loads(form["args"]), json.loads(form["kwargs"])) == (args, kwargs)
    response = operator_client.post(url, form)  # submitted as shown
    assert response.status_code == 302, response.content.decode()[-2000:]
    row.refresh_from_db()
    assert row.state == DeadLetter.State.REQUEUED
    assert (row.args, row.kwargs) == (args, kwargs)


@pytest.mark.parametrize(("field", "expected"), [("args", "a list"), ("kwargs", "an object")])
def test_an_empty_textarea_is_not_a_value(
    operator_client: Client, field: str, expected: str
) -> None:
    row = make_dead_letter()
    response = edit(operator_client, row, **{field: "  "})
    assert response.status_code == 422
    assert f'id="{field}-error">Enter {expected} in JSON' in response.content.decode()
