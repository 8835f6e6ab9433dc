"""The audit log: every action on a dead letter is recorded, and the audit page filters it."""

from __future__ import annotations

import json
import logging
import re

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEvent
from tests.helpers import make_dead_letters
from tests.test_api_auth import API, bearer, token_for

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


def test_a_requeue_through_the_api_names_its_token_on_the_page_and_in_the_log_line(
    operator: User,
    operator_client: Client,
    viewer_client: Client,
    broker: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    by_api, by_page = make_dead_letters(2, queue="requeue-target")
    secret = token_for(operator, "deploy-bot")
    with caplog.at_level(logging.INFO, logger="dashboard.audit"):
        response = Client().post(
            f"{API}/deadletters/{by_api.pk}/requeue", {}, "application/json", **bearer(secret)
        )
        assert response.status_code == 200, response.content
        operator_client.post(reverse("deadletters:requeue", args=[by_page.pk]))
    event = AuditEvent.objects.get(action="requeue", target_ids=[str(by_api.pk)])
    assert (event.username, event.details["api_token"]) == ("olivia", "deploy-bot")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dashboard.audit"]
    assert [(line["user"], line.get("via"), line.get("api_token")) for line in lines] == [
        ("olivia", "api", "deploy-bot"),
        ("olivia", None, None),
    ]
    assert secret not in caplog.text
    page = re.sub(r"\s+", " ", viewer_client.get(reverse("audit")).content.decode())
    cells = re.findall(r"<td[^>]*>(olivia[^<]*)</td>", page)
    assert cells == ["olivia", "olivia (API token deploy-bot)"], "newest first"
