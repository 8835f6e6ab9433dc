"""Nothing a viewer reads leaks a redacted value: not the raw message, not search."""

from __future__ import annotations

import base64
import json
import pickle

import pytest
import redis
from django.test import Client
from django.urls import reverse

from deadletters import search
from deadletters.models import DeadLetter
from demo.embedded_redis import EmbeddedRedis
from tests.helpers import ingest, make_envelope, publish_envelope, publish_raw

pytestmark = pytest.mark.django_db

SECRET = "hunter2-c0rrect-h0rse"


def unknown_task_with_a_password(redis_server: EmbeddedRedis) -> DeadLetter:
    """The hook's envelope of an unregistered task: the task's JSON body kept raw."""
    body = json.dumps([[1], {"password": SECRET, "user": "bob"}, {}]).encode()
    publish_envelope(
        redis_server.url,
        make_envelope(
            kind="unknown_task",
            args=[],
            kwargs={},
            content_type="application/json",
            body_b64=base64.b64encode(body).decode(),
        ),
    )
    ingest()
    return DeadLetter.objects.get()


def test_a_raw_json_body_is_shown_redacted_to_a_viewer(
    viewer_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    row = unknown_task_with_a_password(redis_server)
    page = viewer_client.get(row.get_absolute_url()).content.decode()
    assert "Raw message" in page
    assert "[redacted]" in page
    assert "bob" in page
    assert SECRET not in page


def test_raw_bytes_that_cannot_be_redacted_are_for_operators_only(
    viewer_client: Client,
    operator_client: Client,
    broker: redis.Redis,
    redis_server: EmbeddedRedis,
) -> None:
    pickled = pickle.dumps({"password": SECRET})
    publish_raw(redis_server.url, pickled, content_type="application/x-python-serialize",
                content_encoding="binary")  # fmt: skip
    ingest()
    row = DeadLetter.objects.get()
    seen_by_viewer = viewer_client.get(row.get_absolute_url()).content.decode()
    assert SECRET not in seen_by_viewer
    assert "only operators may read them" in seen_by_viewer
    seen_by_operator = operator_client.get(row.get_absolute_url()).content.decode()
    assert SECRET in seen_by_operator, "the operator reads the bytes (never unpickled)"


def test_a_viewer_cannot_find_a_dead_letter_by_a_redacted_value(
    viewer_client: Client, broker: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    publish_envelope(
        redis_server.url, make_envelope(kwargs={"password": SECRET, "user": "bob-the-builder"})
    )
    ingest()
    search.index_all_pending()
    url = reverse("deadletters:list")

    def found(term: str) -> bool:
        response = viewer_client.get(url, {"q": term})
        assert response.status_code == 200
        return len(response.context["table"].page.object_list) != 0

    assert found("bob-the-builder"), "values that are not secret are searchable"
    assert not found("hunter2")
    # The guess a character at a time, as an attacker would type it.
    assert not found('"password":"h')
    assert not found(SECRET[:8])
