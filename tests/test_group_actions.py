"""The groups page offers Requeue only where something can run again, and says
why where nothing can; Discard stays. Without a query per group."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.broker.inbox import InboundMessage
from deadletters.ingest import store_batch
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db


def store_pickles(count: int) -> None:
    """Messages a pickle-configured producer sent: quarantined, one group."""
    bodies = [b"\x80\x04\x95" + bytes([n]) + b"pickled" for n in range(count)]
    store_batch([
        InboundMessage(body=body, content_type="application/x-python-serialize",
                       content_encoding="binary", raw=body)
        for body in bodies
    ])  # fmt: skip


def group_rows(client: Client) -> dict[str, str]:
    """Each group's row on the groups page, by the task it names."""
    page = client.get(reverse("deadletters:groups")).content.decode()
    body = re.split(r"<tbody[^>]*>", page)[1].split("</tbody>")[0]
    rows = body.split("<tr")[1:]
    named = {}
    for row in rows:
        match = re.search(r"<b>([^<]*)</b></a>", row)
        assert match
        named[match[1]] = row
    return named


def test_a_group_that_cannot_be_requeued_says_why_and_keeps_discard(
    operator_client: Client,
) -> None:
    store_pickles(3)
    make_dead_letters(2, task="demo.tasks.lossy", lossy=True)
    make_dead_letters(2, task="demo.tasks.fine")
    rows = group_rows(operator_client)

    unreadable = rows["(unreadable messages)"]
    assert "Requeue all" not in unreadable
    assert "Cannot requeue: These messages could not be read" in unreadable
    assert "Discard all" in unreadable

    lossy = rows["demo.tasks.lossy"]
    assert "Requeue all" not in lossy
    assert "Cannot requeue: Their arguments could not be kept as JSON" in lossy
    assert "Discard all" in lossy

    fine = rows["demo.tasks.fine"]
    assert "Requeue all 2" in fine and "Cannot requeue" not in fine


def test_a_group_with_one_requeueable_open_row_offers_requeue(operator_client: Client) -> None:
    make_dead_letters(3, task="demo.tasks.mixed", lossy=True)
    make_dead_letters(1, task="demo.tasks.mixed")
    assert "Requeue all 4" in group_rows(operator_client)["demo.tasks.mixed"]


def test_the_blockers_cost_one_query_per_page_not_one_per_group(operator_client: Client) -> None:
    def queries_for_the_page() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert operator_client.get(reverse("deadletters:groups")).status_code == 200
        return len(queries)

    store_pickles(1)
    make_dead_letters(1, task="demo.tasks.t0")
    few = queries_for_the_page()
    for n in range(1, 8):
        make_dead_letters(1, task=f"demo.tasks.t{n}", lossy=n % 2 == 0)
    assert queries_for_the_page() == few
