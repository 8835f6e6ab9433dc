"""The audit log: every action on a dead letter is recorded, and the audit page filters it."""

from __future__ import annotations

import pytest
import redis
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEvent
from tests.helpers import make_dead_letters

pytestmark = pytest.mark.django_db


def test_every_action_is_in_the_audit_and_the_audit_page_filters(
    operator_client: Client, viewer_client: Client, broker: redis.Redis
) -> None:
    first, second = make_dead_letters(2, queue="requeue-target")
    operator_client.post(reverse("deadletters:requeue", args=[first.pk]))
    operator_client.post(reverse("deadletters:discard", args=[second.pk]))
    actions = list(
        AuditEvent.objects.order_by("id").values_list("action", "username", "target_ids")
    )
    assert actions == [
        ("requeue", "olivia", [str(first.pk)]),
        ("discard", "olivia", [str(second.pk)]),
    ]
    page = viewer_client.get(reverse("audit") + "?action=discard").content.decode()
    assert "discard" in page and "requeue</td>" not in page
    fragment = viewer_client.get(reverse("audit"), HTTP_HX_REQUEST="true").content.decode()
    assert "<html" not in fragment and 'id="events"' in fragment
