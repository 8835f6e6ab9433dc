"""The typed confirmation of a big bulk action holds: the number typed is the
number of rows fixed at the first click, however many failures arrive meanwhile."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from deadletters import bulk_runner
from deadletters.models import BulkAction, DeadLetter
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
DISCARD_ALL = {"action": "discard", "scope": "filter", "filter_query": "", "reason": "noise"}


@pytest.fixture(autouse=True)
def confirm_above_five(settings: Any) -> None:
    settings.DEADLETTERS_CONFIRM_ABOVE = 5


def ask(client: Client, headers: dict[str, str] = HTMX, **data: Any) -> Any:
    return client.post(reverse("deadletters:bulk_create"), {**DISCARD_ALL, **data}, headers=headers)


def hidden_max_id(response: HttpResponse) -> str:
    match = re.search(r'name="max_id" value="(\d+)"', response.content.decode())
    assert match, "the confirmation carries the newest id of the first click"
    return match[1]


def test_the_number_typed_is_the_number_fixed_at_the_first_click(operator_client: Client) -> None:
    counted = make_dead_letters(8)
    asked = ask(operator_client)
    assert asked.status_code == 422
    assert (
        "This acts on the <b>8</b> dead letters that match now; later failures are not"
        " included. Type <b>8</b> to confirm" in asked.content.decode()
    )
    max_id = hidden_max_id(asked)
    assert int(max_id) == counted[-1].pk

    later = make_dead_letters(4)  # failures keep arriving while the operator types
    confirmed = ask(operator_client, confirm="8", max_id=max_id)
    assert confirmed.status_code == 200, confirmed.content.decode()
    action = BulkAction.objects.get()
    assert confirmed["HX-Redirect"] == action.get_absolute_url()
    assert (action.total, action.max_id) == (8, counted[-1].pk)

    bulk_runner.run(action)
    states = DeadLetter.objects.in_bulk([r.pk for r in counted + later])
    assert {states[r.pk].state for r in counted} == {DeadLetter.State.DISCARDED}
    assert {states[r.pk].state for r in later} == {DeadLetter.State.OPEN}


def test_typing_a_later_total_is_refused_with_the_number_of_the_first_click(
    operator_client: Client,
) -> None:
    make_dead_letters(8)
    max_id = hidden_max_id(ask(operator_client))
    make_dead_letters(4)
    refused = ask(operator_client, confirm="12", max_id=max_id)
    assert refused.status_code == 422
    assert "Type <b>8</b> to confirm" in refused.content.decode()
    assert hidden_max_id(refused) == max_id
    assert not BulkAction.objects.exists()


@pytest.mark.parametrize("max_id", ["abc", "-1", "1e3", str(10**30), "9" * 5000, "newer"])
def test_a_forged_max_id_is_422_naming_it(operator_client: Client, max_id: str) -> None:
    rows = make_dead_letters(8)
    if max_id == "newer":  # would sweep in failures that have not arrived yet
        max_id = str(rows[-1].pk + 1000)
    response = ask(operator_client, confirm="8", max_id=max_id)
    assert response.status_code == 422
    page = response.content.decode()
    assert "<code>max_id</code>: Not the confirmation this page asked for" in page
    assert not BulkAction.objects.exists()


def test_without_javascript_the_confirmation_is_a_form_that_posts_the_same_action(
    operator_client: Client,
) -> None:
    rows = make_dead_letters(8)
    page = ask(operator_client, headers={}).content.decode()
    assert "<html" in page
    form = page[page.index('<form method="post" action="/deadletters/bulk/">') :]
    form = form[: form.index("</form>")]
    fields = {name: html.unescape(value) for name, value in
              re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)}  # fmt: skip
    assert fields["max_id"] == str(rows[-1].pk)
    assert 'name="confirm"' in form
    make_dead_letters(2)
    response = operator_client.post(reverse("deadletters:bulk_create"), {**fields, "confirm": "8"})
    assert response.status_code == 302
    action = BulkAction.objects.get()
    assert (action.action, action.reason, action.total) == ("discard", "noise", 8)
