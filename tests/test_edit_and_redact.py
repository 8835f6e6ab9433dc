"""Edit before requeue, and redaction for display and for the audit."""

from __future__ import annotations

import json

import pytest
import redis
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEvent
from deadletters.models import DeadLetter
from deadletters.redact import REDACTED, redact, restore
from tests.helpers import make_dead_letter

pytestmark = pytest.mark.django_db

SECRET_KWARGS = {
    "customer": {"name": "Ada", "Password": "hunter2", "cards": [{"card_number": "4111"}]},
    "API_KEY": "sk-live-123",
    "amount": 10,
}


def test_sensitive_keys_are_redacted_at_any_depth_case_insensitively() -> None:
    shown = redact(SECRET_KWARGS)
    assert shown == {
        "customer": {"name": "Ada", "Password": REDACTED, "cards": REDACTED},
        "API_KEY": REDACTED,
        "amount": 10,
    }
    assert SECRET_KWARGS["API_KEY"] == "sk-live-123"  # the original is untouched


def test_an_edit_keeps_the_secrets_it_never_saw() -> None:
    edited = {**redact(SECRET_KWARGS), "amount": 12}
    assert restore(edited, SECRET_KWARGS) == {**SECRET_KWARGS, "amount": 12}


def test_the_detail_page_shows_redacted_values(operator_client: Client) -> None:
    row = make_dead_letter(kwargs=SECRET_KWARGS, args=[{"token": "abc"}])
    page = operator_client.get(row.get_absolute_url()).content.decode()
    assert "hunter2" not in page and "sk-live-123" not in page and "abc" not in page
    assert REDACTED in page
    assert "Ada" in page


def test_requeue_sends_the_stored_secrets(operator_client: Client, broker: redis.Redis) -> None:
    row = make_dead_letter(kwargs=SECRET_KWARGS, queue="requeue-target")
    operator_client.post(reverse("deadletters:requeue", args=[row.pk]))
    (raw,) = broker.lrange("requeue-target", 0, -1)
    import base64

    _, kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
    assert kwargs == SECRET_KWARGS


def test_edit_and_requeue_changes_args_and_queue_and_audits_before_and_after(
    operator_client: Client, broker: redis.Redis
) -> None:
    row = make_dead_letter(args=[1, 2], kwargs=SECRET_KWARGS, queue="default")
    form = operator_client.get(reverse("deadletters:edit", args=[row.pk])).content.decode()
    assert "hunter2" not in form
    response = operator_client.post(
        reverse("deadletters:edit", args=[row.pk]),
        {
            "args": "[1, 3]",
            "kwargs": json.dumps({**redact(SECRET_KWARGS), "amount": 12}),
            "queue": "requeue-target",
            "reason": "amount was wrong",
        },
    )
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.state == DeadLetter.State.REQUEUED
    assert row.args == [1, 3]
    assert row.kwargs == {**SECRET_KWARGS, "amount": 12}
    assert row.queue == "requeue-target"
    assert broker.llen("requeue-target") == 1
    event = AuditEvent.objects.get(action="edit_requeue")
    assert event.reason == "amount was wrong"
    assert event.details["before"]["args"] == [1, 2]
    assert event.details["after"]["args"] == [1, 3]
    assert event.details["after"]["kwargs"]["API_KEY"] == REDACTED
    assert "sk-live" not in json.dumps(event.details)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("args", "[1, 2", "Not valid JSON"),
        ("args", '{"a": 1}', "Must be a list in JSON."),
        ("kwargs", "[1]", "Must be an object in JSON."),
    ],
)
def test_invalid_json_is_explained_next_to_the_field(
    operator_client: Client, field: str, value: str, message: str
) -> None:
    row = make_dead_letter()
    data = {"args": "[1]", "kwargs": "{}", "queue": "default", field: value}
    response = operator_client.post(reverse("deadletters:edit", args=[row.pk]), data)
    assert response.status_code == 422
    assert f'id="{field}-error">' in response.content.decode()
    assert message in response.content.decode()
    row.refresh_from_db()
    assert row.state == DeadLetter.State.OPEN


def test_a_viewer_cannot_edit(viewer_client: Client) -> None:
    row = make_dead_letter()
    assert viewer_client.get(reverse("deadletters:edit", args=[row.pk])).status_code == 403
