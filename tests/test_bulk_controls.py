"""The bulk action's page: pause, resume, cancel, approve, and what it says."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEvent
from deadletters import bulk, bulk_runner
from deadletters.models import BulkAction, DeadLetter
from tests.helpers import make_dead_letters, make_user

pytestmark = pytest.mark.django_db


def control(client: Client, action: BulkAction, verb: str, **headers: Any) -> Any:
    return client.post(reverse("deadletters:bulk_control", args=[action.pk, verb]), **headers)


@pytest.fixture
def running(operator_client: Client) -> BulkAction:
    make_dead_letters(5, queue="requeue-target")
    operator = make_user("olivia-2", group="Operator")
    return bulk.create(user=operator, action="discard", reason="r", filter_query="state=open")


def test_an_operator_pauses_resumes_and_cancels_from_the_page(
    operator_client: Client, running: BulkAction
) -> None:
    response = control(operator_client, running, "pause", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Trigger"] == "ops-changed"
    body = response.content.decode()
    assert "<html" not in body
    assert 'data-state class="state state-paused">Paused' in body
    assert "/resume/" in body and "/pause/" not in body

    assert control(operator_client, running, "resume").status_code == 302
    running.refresh_from_db()
    assert running.state == BulkAction.State.PENDING

    page = control(operator_client, running, "cancel", HTTP_HX_REQUEST="true")
    assert "Cancelled" in page.content.decode()
    assert control(operator_client, running, "resume", HTTP_HX_REQUEST="true").status_code == 409
    assert list(
        AuditEvent.objects.filter(action__startswith="bulk_")
        .order_by("id")
        .values_list("action", "username")
    )[-3:] == [("bulk_paused", "olivia"), ("bulk_resumed", "olivia"), ("bulk_cancelled", "olivia")]


def test_a_viewer_controls_nothing(viewer_client: Client, running: BulkAction) -> None:
    assert control(viewer_client, running, "pause").status_code == 403
    running.refresh_from_db()
    assert running.state == BulkAction.State.PENDING


def test_an_unknown_control_is_404(operator_client: Client, running: BulkAction) -> None:
    assert control(operator_client, running, "explode").status_code == 404


def test_the_one_who_asked_cannot_approve_another_operator_can(
    operator_client: Client, settings: Any
) -> None:
    settings.DEADLETTERS_APPROVAL_ABOVE = 2
    make_dead_letters(3)
    asker = make_user("alice", group="Operator")
    action = bulk.create(user=asker, action="discard", reason="cleanup", filter_query="state=open")
    assert action.state == BulkAction.State.APPROVAL
    alice = Client()
    alice.force_login(asker)
    page = alice.get(action.get_absolute_url()).content.decode()
    assert "another operator approves it here" in page
    assert "/approve/" not in page, "no button for the one who asked"
    refused = control(alice, action, "approve", HTTP_HX_REQUEST="true")
    assert refused.status_code == 409
    assert "Another operator must approve" in refused.content.decode()
    assert "/approve/" in operator_client.get(action.get_absolute_url()).content.decode()
    assert control(operator_client, action, "approve").status_code == 302
    action.refresh_from_db()
    assert action.approved_by is not None
    assert (action.state, action.approved_by.username) == (BulkAction.State.PENDING, "olivia")
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert "Approved by" in page and "olivia" in page


def test_the_page_of_a_stopped_action_says_why_and_where_its_canary_fell(
    operator_client: Client, settings: Any
) -> None:
    settings.DEADLETTERS_CANARY_ABOVE, settings.DEADLETTERS_CANARY_SIZE = 3, 2
    rows = make_dead_letters(6, exception_type="ConnectionError", exception_message="down")
    operator = make_user("otto", group="Operator")
    action = bulk.create(user=operator, action="requeue", reason="fix", filter_query="state=open")
    action = bulk_runner.run(action)
    assert action.state == BulkAction.State.CANARY
    # The canary's tasks fail again the same way: their dead letters arrive.
    for canary in DeadLetter.objects.filter(pk__in=action.canary_ids or []):
        make_dead_letters(
            1, task=canary.task_name, exception_type="ConnectionError",
            exception_message="down", requeued_from=canary.task_id,
        )  # fmt: skip
    action = bulk_runner.run(action)
    assert action.state == BulkAction.State.STOPPED
    page = operator_client.get(action.get_absolute_url()).content.decode()
    assert "Stopped by its canary" in page
    assert "Stopped by the canary: 2 of 2 failed again with the same error" in page
    assert "The groups they fell into" in page
    assert f"signature={rows[0].signature}" in page
    for pk in action.canary_ids or []:
        assert f'href="/deadletters/{pk}/"' in page
    assert DeadLetter.objects.filter(pk__in=[r.pk for r in rows], state="open").count() == 4
