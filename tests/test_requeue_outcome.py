"""What became of a requeue: on the dead letter's page and on the bulk action's,
as the workers' reports arrive through the monitor's store."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import redis
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from deadletters import bulk_runner
from deadletters.models import BulkAction, DeadLetter
from tests.helpers import make_dead_letter, make_dead_letters
from tests.outcome_reports import fold, requeue_outcome

pytestmark = pytest.mark.django_db

TARGET = "requeue-target"  # nothing consumes it here
POLL = 'hx-trigger="every 5s" data-poll-while-visible'


@pytest.fixture
def requeued(operator_client: Client, broker: redis.Redis) -> DeadLetter:
    dead_letter = make_dead_letter(queue=TARGET)
    response = operator_client.post(reverse("deadletters:requeue", args=[dead_letter.pk]))
    assert response.status_code == 302
    dead_letter.refresh_from_db()
    return dead_letter


def outcome_line(page: str) -> str:
    (line,) = re.findall(
        r'<p class="requeue-outcome[^"]*" data-requeue-outcome="\w*">.*?</p>', page, re.S
    )
    return re.sub(r"\s+", " ", line)


def test_a_requeue_that_has_not_run_yet_says_so_and_is_watched(
    viewer_client: Client, requeued: DeadLetter
) -> None:
    page = viewer_client.get(requeued.get_absolute_url()).content.decode()
    line = outcome_line(page)
    assert f"Requeued as <code>{requeued.requeue_task_id}</code>, has not run yet." in line
    assert (
        f'<section id="actions" class="card actions" hx-get="{requeued.get_absolute_url()}" {POLL}'
        in page
    )


def test_the_watched_actions_are_a_fragment(viewer_client: Client, requeued: DeadLetter) -> None:
    response = viewer_client.get(requeued.get_absolute_url(), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    actions = response.content.decode()
    assert "<html" not in actions
    assert actions.lstrip().startswith('<section id="actions"')
    assert "has not run yet" in actions
    assert "Traceback" not in actions


def test_a_requeue_that_succeeded_says_when_and_how_long_it_ran(
    viewer_client: Client, requeued: DeadLetter
) -> None:
    at = timezone.now().replace(microsecond=0)
    fold(requeues=[requeue_outcome(requeued.requeue_task_id, "succeeded", at=at, runtime=0.4)])
    page = viewer_client.get(requeued.get_absolute_url()).content.decode()
    line = outcome_line(page)
    assert 'data-requeue-outcome="succeeded"' in line
    stamp = timezone.localtime(at).strftime("%H:%M:%S")
    assert f"Requeued as <code>{requeued.requeue_task_id}</code>, succeeded at" in line
    assert f">{stamp}</time> in 0.4 s." in line
    assert "outcome-succeeded" in line, "in colour as well as in words"
    assert POLL not in page, "nothing more to wait for"


def test_a_requeue_that_failed_again_links_to_its_new_dead_letter(
    viewer_client: Client, requeued: DeadLetter
) -> None:
    fold(requeues=[requeue_outcome(requeued.requeue_task_id, "failed")])
    line = outcome_line(viewer_client.get(requeued.get_absolute_url()).content.decode())
    assert "failed again at" in line
    assert "its new dead letter has not arrived yet" in line

    again = make_dead_letter(
        id=requeued.requeue_task_id,
        queue=TARGET,
        requeued_from=requeued.task_id,
        exception_type="TimeoutError",
    )
    assert again.requeued_from == requeued
    page = viewer_client.get(requeued.get_absolute_url()).content.decode()
    line = outcome_line(page)
    assert f"Requeued as <code>{requeued.requeue_task_id}</code>, failed again:" in line
    assert f'<a href="{again.get_absolute_url()}">TimeoutError at' in line
    assert "outcome-failed" in line
    assert POLL not in page


def test_a_requeue_being_retried_is_still_watched(
    viewer_client: Client, requeued: DeadLetter
) -> None:
    fold(requeues=[requeue_outcome(requeued.requeue_task_id, "retried")])
    page = viewer_client.get(requeued.get_absolute_url()).content.decode()
    assert "and will be retried." in outcome_line(page)
    assert POLL in page


def test_after_an_hour_without_a_report_the_page_stops_waiting_and_says_why(
    viewer_client: Client, requeued: DeadLetter
) -> None:
    DeadLetter.objects.filter(pk=requeued.pk).update(
        requeued_at=timezone.now() - timedelta(hours=2)
    )
    page = viewer_client.get(requeued.get_absolute_url()).content.decode()
    assert "has not run yet: no worker reported it" in outcome_line(page)
    assert POLL not in page


def test_an_open_or_discarded_dead_letter_has_no_outcome(viewer_client: Client) -> None:
    page = viewer_client.get(make_dead_letter().get_absolute_url()).content.decode()
    assert "data-requeue-outcome" not in page
    assert POLL not in page


# --- a bulk requeue --------------------------------------------------------------------


@pytest.fixture
def bulk_requeue(operator_client: Client, broker: redis.Redis) -> BulkAction:
    make_dead_letters(5, queue=TARGET)
    response = operator_client.post(
        reverse("deadletters:bulk_create"),
        {"action": "requeue", "scope": "filter", "reason": "fix shipped",
         "filter_query": f"queue={TARGET}&state=open"},
    )  # fmt: skip
    assert response.status_code == 302
    action = bulk_runner.run(BulkAction.objects.get())
    assert (action.state, action.done) == (BulkAction.State.DONE, 5)
    return action


def fragment(client: Client, url: str, target: str = "") -> str:
    """What htmx gets for the part it polls (``target``: that part's id)."""
    headers = {"HX-Request": "true", **({"HX-Target": target} if target else {})}
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    text = response.content.decode()
    assert "<html" not in text
    return text


def counts(page: str) -> dict[str, str]:
    return dict(re.findall(r"<dd data-outcome-([\w-]+)>(\d+)</dd>", page))


def test_a_bulk_requeue_reports_its_outcomes_as_they_arrive(
    viewer_client: Client, bulk_requeue: BulkAction
) -> None:
    url = bulk_requeue.get_absolute_url()
    page = viewer_client.get(url).content.decode()
    assert "What became of the requeued tasks" in page
    assert counts(page) == {"succeeded": "0", "failed": "0", "not-run": "5"}
    part = page.split('<section id="requeue-outcomes"', 1)[1].split(">", 1)[0]
    assert f'hx-get="{url}" {POLL}' in part, "done, but outcomes are awaited"
    # The progress is done: it polls no more, and holds no outcomes.
    progress = fragment(viewer_client, url)
    assert progress.lstrip().startswith('<section id="progress"')
    assert "hx-trigger" not in progress and "data-outcome" not in progress

    new_ids = list(
        DeadLetter.objects.filter(bulk_action=bulk_requeue)
        .order_by("pk")
        .values_list("requeue_task_id", flat=True)
    )
    fold(
        requeues=[
            requeue_outcome(new_ids[0], "succeeded", runtime=0.1),
            requeue_outcome(new_ids[1], "succeeded", runtime=0.2),
            requeue_outcome(new_ids[2], "failed"),
            requeue_outcome(new_ids[3], "retried"),
        ]
    )
    outcomes = fragment(viewer_client, url, target="requeue-outcomes")
    assert outcomes.lstrip().startswith('<section id="requeue-outcomes"')
    assert counts(outcomes) == {"succeeded": "2", "failed": "1", "retrying": "1", "not-run": "1"}
    assert POLL in outcomes

    fold(requeues=[requeue_outcome(new_ids[3], "succeeded"), requeue_outcome(new_ids[4], "failed")])
    outcomes = fragment(viewer_client, url, target="requeue-outcomes")
    assert counts(outcomes) == {"succeeded": "3", "failed": "2", "not-run": "0"}
    assert "hx-get" not in outcomes, "every outcome is in: the poll stops"


def test_after_an_hour_the_bulk_page_stops_waiting_for_outcomes(
    viewer_client: Client, bulk_requeue: BulkAction
) -> None:
    BulkAction.objects.filter(pk=bulk_requeue.pk).update(
        finished_at=timezone.now() - timedelta(hours=2)
    )
    outcomes = fragment(viewer_client, bulk_requeue.get_absolute_url(), target="requeue-outcomes")
    assert "hx-get" not in outcomes
    assert "No worker reported the others within an hour" in outcomes


def test_the_bulk_outcomes_are_aggregate_queries(
    viewer_client: Client, bulk_requeue: BulkAction
) -> None:
    """One aggregate by outcome, one by the group a task fell into when it failed
    again: never a query per row."""
    with CaptureQueriesContext(connection) as queries:
        fragment(viewer_client, bulk_requeue.get_absolute_url(), target="requeue-outcomes")
    rows = [
        q["sql"] for q in queries.captured_queries if 'FROM "deadletters_deadletter"' in q["sql"]
    ]
    assert len(rows) == 2
    assert all("GROUP BY" in sql for sql in rows)
    assert '"requeue_outcome"' in rows[0]


def test_a_bulk_discard_has_no_outcomes(operator_client: Client) -> None:
    make_dead_letters(2)
    operator_client.post(
        reverse("deadletters:bulk_create"),
        {"action": "discard", "scope": "filter", "reason": "noise", "filter_query": ""},
    )
    action = bulk_runner.run(BulkAction.objects.get())
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert "What became of" not in page
    assert "hx-get" not in page.split('id="progress"', 1)[1].split(">", 1)[0]
    assert (
        fragment(operator_client, action.get_absolute_url(), target="requeue-outcomes")
        .lstrip()
        .startswith('<section id="progress"')
    )
